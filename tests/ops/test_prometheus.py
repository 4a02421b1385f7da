"""A real Prometheus scraping a real tritonserver under load: every PromQL expression of the
dashboard and the rules is executed and must return series for the served models."""

from __future__ import annotations

import dataclasses

import os
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import yaml

from dnx.ops import golden as g
from dnx.ops.dashboard import build_dashboard, dashboard_queries
from dnx.ops.render import query, render_dashboard_png
from dnx.ops.rules import MonitoringSpec, alert_rules, plain_rules_yaml, recording_rules
from tests.ops.conftest import PROMETHEUS, need_prometheus

JOB = "densenet121"
SERVED = ("densenet121", "densenet121_onnx", "densenet121_preprocess", "densenet121_softmax")
# The rules Prometheus loads: thresholds no healthy server crosses, except the error ratio
# (one image in eight is not an image: the ensemble and its preprocessing fail those).
QUIET = MonitoringSpec(job=JOB, models=SERVED, slo_p99_ms=600_000, pdb_floor=1)
BAD_EVERY = 8
# Seconds of load before the queries (longer for the README's picture: DNX_DASHBOARD_LOAD_S=120).
LOAD_S = float(os.environ.get("DNX_DASHBOARD_LOAD_S", "20"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(url: str, images: list[bytes], stop: threading.Event) -> None:
    """Bytes to the ensemble (1 in BAD_EVERY undecodable), tensors straight to the variant, until ``stop``."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from dnx.preprocess import preprocess_bytes

    client = grpcclient.InferenceServerClient(url)
    tensor = preprocess_bytes(images[0])[None]
    i = 0
    while not stop.is_set():
        blob = b"not an image" if i % BAD_EVERY == BAD_EVERY - 1 else images[i % len(images)]
        inp = grpcclient.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[blob]], dtype=np.object_))
        try:
            client.infer("densenet121", [inp])
        except Exception:  # noqa: BLE001 - the undecodable images fail, as they should
            pass
        if i % 3 == 0:
            t = grpcclient.InferInput("input", list(tensor.shape), "FP32")
            t.set_data_from_numpy(tensor)
            client.infer("densenet121_onnx", [t])
        i += 1
        time.sleep(0.05)
    client.close()


@pytest.fixture(scope="module")
def prometheus(ops_server, fp32_repository, tmp_path_factory):
    need_prometheus()
    root = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(plain_rules_yaml(QUIET))
    for group in rules["groups"]:
        group["interval"] = "1s"  # the test cannot wait 30 s per evaluation
    (root / "rules.yaml").write_text(yaml.safe_dump(rules))
    (root / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(root / "rules.yaml")],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{ops_server.metrics_port}"]}]}],
    }))
    port = _free_port()
    log = open(root / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    images = [b for _, b in g.image_bytes(g.read_golden(fp32_repository / g.GOLDEN_NAME))]
    loader = threading.Thread(target=_load, args=(ops_server.grpc_url, images, stop), daemon=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (root / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus not ready in 120 s"
            time.sleep(0.5)
        started = time.time()
        loader.start()
        deadline = time.monotonic() + 300
        while True:  # until every rule has evaluated over enough scrapes for rates and summaries
            lat = {r["metric"].get("model") for r in query(url, 'dnx:request_latency_us:max{quantile="0.99"} >= 0')}
            batch = {r["metric"].get("model") for r in query(url, "dnx:batch_size:avg5m >= 0")}
            if set(SERVED) <= lat and set(SERVED) <= batch and time.time() - started > LOAD_S:
                break
            assert time.monotonic() < deadline, f"rules did not produce series in 300 s: {lat}, {batch}"
            time.sleep(2)
        yield {"url": url, "started": started, "metrics": ops_server.metrics_url}
    finally:
        stop.set()
        if loader.is_alive():
            loader.join(timeout=30)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _models(result) -> set[str]:
    return {r["metric"].get("model") for r in result}


def test_every_dashboard_query_returns_series(prometheus):
    doc = build_dashboard(QUIET)
    queries = dashboard_queries(doc)
    # A CPU deployment's dashboard: every panel shows data (no GPU panel that never could).
    assert len(queries) == 6 * len(SERVED) + 3 and not any("nv_gpu_" in q["expr"] for q in queries)
    empty = []
    for q in queries:
        result = query(prometheus["url"], q["expr"])  # raises on a PromQL error
        if not result:
            empty.append(f"{q['panel']}: {q['expr']}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # A GPU deployment's two GPU panels are valid PromQL against this Prometheus too.
    gpu = [q for q in dashboard_queries(build_dashboard(dataclasses.replace(QUIET, gpu=True))) if "nv_gpu_" in q["expr"]]
    assert len(gpu) == 2 and all(isinstance(query(prometheus["url"], q["expr"]), list) for q in gpu)


def test_every_recording_rule_returns_series_for_every_model(prometheus):
    url = prometheus["url"]
    for rule in recording_rules(QUIET):
        direct, recorded = query(url, rule["expr"]), query(url, rule["record"])
        assert direct and recorded, rule
        if "model" in rule["expr"] or rule["record"].startswith("dnx:request_errors"):
            assert set(SERVED) <= _models(direct) and set(SERVED) <= _models(recorded), rule
    up = query(url, "dnx:replicas:up")
    assert [float(r["value"][1]) for r in up] == [1.0]


def test_alerts_on_live_data_fire_where_they_should(prometheus):
    url = prometheus["url"]
    quiet = {a["alert"]: a["expr"] for a in alert_rules(QUIET)}
    # The bad images make the ensemble fail ~1 request in 8: above 1 %. The tensor models never see them.
    errors = _models(query(url, quiet["DnxErrorRatioHigh"]))
    assert "densenet121" in errors and not errors & {"densenet121_onnx", "densenet121_softmax"}
    for name in ("DnxLatencyP99AboveSLO", "DnxModelNotReady", "DnxReplicasBelowPDBFloor"):
        assert query(url, quiet[name]) == [], name
    # The same alerts with thresholds this server crosses: a 1 us SLO, a floor of 2 replicas, a model it lacks.
    loud = {a["alert"]: a["expr"] for a in alert_rules(MonitoringSpec(
        job=JOB, models=(*SERVED, "densenet121_openvino"), slo_p99_ms=0.001, pdb_floor=2))}
    assert _models(query(url, loud["DnxLatencyP99AboveSLO"])) == set(SERVED)
    assert _models(query(url, loud["DnxModelNotReady"])) == {"densenet121_openvino"}
    assert [float(r["value"][1]) for r in query(url, loud["DnxReplicasBelowPDBFloor"])] == [1.0]
    # Prometheus itself evaluates the loaded alert (for: 5m, so pending, not yet firing).
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=10) as resp:
            alerts = yaml.safe_load(resp.read())["data"]["alerts"]
        pending = {a["labels"].get("model") for a in alerts if a["labels"]["alertname"] == "DnxErrorRatioHigh"}
        if pending:
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(2)
    assert "densenet121" in pending and not pending & {"densenet121_onnx", "densenet121_softmax"}


def test_dashboard_png_from_the_real_query_results(prometheus, tmp_path):
    out = os.environ.get("DNX_DASHBOARD_PNG") or tmp_path / "dashboard.png"
    path = render_dashboard_png(build_dashboard(QUIET), prometheus["url"], out,
                                start=prometheus["started"], end=time.time(), step=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
