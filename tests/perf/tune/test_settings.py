"""Every setting ``dnx tune`` may choose loads in dnx's local backends and answers like the untuned model.

A real tritonserver serves an ONNX Runtime model and an OpenVINO model; each value of each
dimension of their search spaces (applied alone to the exported config) is loaded through
``load_model(config=...)``, its config read back, and concurrent batch-1 requests (so the
dynamic batcher forms batches, padded for OpenVINO) are checked against the untuned answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from dnx.model_repository.config_edit import config_json, read_config
from dnx.perf.tune import space as t
from tests.fixtures_server import _link_tree, concurrent_infer

pytestmark = [pytest.mark.server, pytest.mark.slow]

ORT_MODEL = "densenet121_onnx"


@pytest.fixture(scope="module")
def tune_repository(fp32_repository, onnx_fp32_path, tmp_path_factory):
    from dnx.exporter import openvino as ovx
    from dnx.model_repository.render import render_config
    from dnx.pipeline import openvino_entry, triton_config
    from dnx.spec import DEFAULT_MODEL

    repo = tmp_path_factory.mktemp("tunesettings") / "model_repository"
    repo.mkdir()
    _link_tree(fp32_repository / ORT_MODEL, repo / ORT_MODEL)
    v = ovx.openvino_variant(onnx_fp32_path, "fp32", repo.parent / "build")
    name = v.model_name()
    (repo / name / "1").mkdir(parents=True)
    for fname, path in v.files.items():
        shutil.move(path, repo / name / "1" / fname)
    cfg = triton_config(openvino_entry(v, DEFAULT_MODEL), DEFAULT_MODEL)
    (repo / name / "config.pbtxt").write_text(render_config(cfg))
    (repo / name / "labels.txt").write_text((repo / ORT_MODEL / "labels.txt").read_text())
    return repo, [ORT_MODEL, name]


def _settings(cfg):
    start = t.knobs_of(cfg)
    seen = {_key(start)}
    for dim in t.space_for(cfg, max_concurrency=4):
        for value in dim.values:
            knobs = {**start, dim.name: value}
            if dim.applies(knobs) and _key(knobs) not in seen:
                seen.add(_key(knobs))
                yield knobs
    # The queue delay only applies once batches form: try it on top of the largest batch too.
    big = {**start, "preferred": min(8, cfg.max_batch_size)} if "preferred" in start else {**start, "max_batch": 8}
    for q in (1000, 5000):
        knobs = {**big, "queue_us": q}
        if _key(knobs) not in seen:
            seen.add(_key(knobs))
            yield knobs


def test_every_setting_loads_and_answers_like_the_untuned_model(triton_server_factory, tune_repository, photo_array,
                                                                 tmp_path_factory):
    import tritonclient.grpc as grpcclient

    repo, models = tune_repository
    log = tmp_path_factory.mktemp("tunetriton") / "tritonserver.log"
    server = triton_server_factory(repo, log_file=log)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = photo_array[:4]
    tried = []
    try:
        for model in models:
            base = read_config(repo / model)
            client.load_model(model, config=config_json(base))
            expected = np.concatenate([_infer(client, model, inputs[i:i + 1]) for i in range(len(inputs))])
            scale = float(np.abs(expected).max())
            for knobs in _settings(base):
                cfg = t.apply_knobs(base, knobs)
                client.load_model(model, config=config_json(cfg))
                got = client.get_model_config(model, as_json=True)["config"]
                assert int(got.get("max_batch_size", 0)) == cfg.max_batch_size, knobs
                assert int(got["instance_group"][0]["count"]) == cfg.instance_count, knobs
                assert {k: v["string_value"] for k, v in got.get("parameters", {}).items()} == cfg.parameters, knobs
                errors, worst = concurrent_infer(server.grpc_url, model, inputs, expected, threads=3, per_thread=2)
                assert not errors, (knobs, errors)
                assert worst <= 1e-4 * max(1.0, scale), (knobs, worst)
                if cfg.max_batch_size > 1:  # a multi-image request (OpenVINO pads it to max_batch_size)
                    got = _infer(client, model, inputs[:2])
                    assert np.abs(got - expected[:2]).max() <= 1e-4 * max(1.0, scale), knobs
                tried.append((model, t.describe(knobs)))
            client.load_model(model, config=config_json(base))  # back to the repository's config
    finally:
        client.close()
    names = {m for m, _ in tried}
    assert names == set(models), tried
    labels = " ".join(d for _, d in tried)
    for expected_setting in ("inst=2", "hint=THROUGHPUT", "mbs=8", "q=5000us", "inter=2", "pref=8"):
        assert expected_setting in labels, (expected_setting, json.dumps(tried))
    # Two openvino instances (NUM_STREAMS 2) act as the C++ backend's one compiled model: each
    # instance process compiled one stream with its half of the cores, not two streams each.
    shares = re.findall(r"streams (\d+), threads (\d+), batch \w+, one of 2 instance processes", log.read_text())
    assert shares and set(shares) == {("1", str(max(1, (os.cpu_count() or 1) // 2)))}, shares


def _infer(client, model, batch):
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(np.ascontiguousarray(batch))
    return client.infer(model, [inp]).as_numpy("logits")


def _key(knobs: dict) -> tuple:
    return tuple(sorted(knobs.items()))
