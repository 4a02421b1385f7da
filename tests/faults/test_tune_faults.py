"""``dnx tune`` under faults at its write-back: signals and a failed write between the configs and the manifest.

Every run is a real ``dnx tune`` process against a real local tritonserver and perf_analyzer, on a
repository of two tiny image-shaped ONNX models (so a candidate costs seconds, not minutes). Their
previous config is deliberately slow: a preferred batch of 4 with a 200 ms queue delay, measured at
concurrency 2, so every request waits the whole delay; a candidate with a smaller preferred batch
answers at once. The search therefore always finds a winner well past the noise margin for both
models and writes both back, and the fault points (``dnx.faults``, ``DNX_FAULT``) inside the
write-back are reached: after the first model's config, and before the manifest.

What is promised (docs/RELIABILITY.md): afterwards every config is either the old or the new one,
the manifest agrees with the configs on disk, and the run ends with 128 + signal, or 1 and one
``Error:`` line.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from dnx.model_repository.config_edit import read_config
from dnx.model_repository.render import TritonConfig, render_config
from tests.faults.conftest import fill_disk, one_error_line, tree_digest

pytestmark = [pytest.mark.faults]

MODELS = ("dnx_tiny_a", "dnx_tiny_b")
SLOW = {"preferred_batch_sizes": [4], "max_queue_delay_us": 200_000}
# The fewest levels and the shortest windows `dnx tune` accepts (perf_analyzer's window >= 200 ms).
FAST = ["--concurrency", "2", "--max-concurrency", "2", "--measurement-interval", "200",
        "--stability-percentage", "100", "--max-trials", "3", "--budget-minutes", "4", "-q"]
CONFIG_FIELDS = ("max_batch_size", "instance_count", "instance_kind", "preferred_batch_sizes",
                 "max_queue_delay_us", "parameters")


def _tiny_image_onnx(path: Path, scale: float) -> None:
    """logits[N, 1000] = mean over H, W of input[N, 3, 224, 224], times a fixed [3, 1000] matrix."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
    w = numpy_helper.from_array((np.arange(3000, dtype=np.float32).reshape(3, 1000) % 7 - 3) * scale, "w")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny_image", [x], [y], [w, axes]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _config_entry(cfg: TritonConfig) -> dict:
    return {k: getattr(cfg, k) for k in CONFIG_FIELDS}


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    """Two dnx-rendered onnxruntime models with a slow previous config, and a manifest that records them."""
    repo = tmp_path / "model_repository"
    manifest = {"model": "densenet121", "models": {}}
    for i, name in enumerate(MODELS):
        _tiny_image_onnx(repo / name / "1" / "model.onnx", 0.5 + i)
        cfg = TritonConfig(name=name, max_batch_size=4, input_name="input", output_name="logits",
                           input_dims=(3, 224, 224), output_dims=(1000,), backend="onnxruntime",
                           default_model_filename="model.onnx", label_filename=None,
                           parameters={"intra_op_thread_count": "1", "inter_op_thread_count": "1"}, **SLOW)
        (repo / name / "config.pbtxt").write_text(render_config(cfg))
        manifest["models"][name] = {"config": _config_entry(read_config(repo / name))}
    (repo / "dnx-manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return repo


def _configs(repo: Path) -> dict[str, str]:
    return {n: (repo / n / "config.pbtxt").read_text() for n in MODELS}


def _tune(dnx, repo: Path, out: Path, fault: str | None = None):
    args = ["tune", "--repository", repo, "--out", out, *[a for n in MODELS for a in ("--models", n)], *FAST]
    return dnx.run(*args, timeout=900, **({"DNX_FAULT": fault} if fault else {}))


def _assert_consistent(repo: Path, old: dict[str, str], new: dict[str, str] | None) -> set[str]:
    """Every config is the old or the new one and the manifest says what is on disk; returns the models changed."""
    now = _configs(repo)
    changed = set()
    for n in MODELS:
        assert now[n] == old[n] or (new is not None and now[n] == new[n]), f"{n}: neither the old nor the new config"
        if now[n] != old[n]:
            changed.add(n)
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    for n in MODELS:
        assert manifest["models"][n]["config"] == _config_entry(read_config(repo / n)), \
            f"{n}: the manifest disagrees with its config.pbtxt"
    return changed


@pytest.mark.server
@pytest.mark.slow
def test_tune_writes_both_models_back(dnx, tiny_repo, tmp_path):
    """The control run: without a fault both models get a new config and the manifest records both."""
    old = _configs(tiny_repo)
    r = _tune(dnx, tiny_repo, tmp_path / "tune")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _assert_consistent(tiny_repo, old, _configs(tiny_repo)) == set(MODELS)
    tuning = json.loads((tiny_repo / "dnx-manifest.json").read_text())["tuning"]
    assert all(tuning["models"][n]["written"] for n in MODELS)


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("where,sig", [("after-first-config", signal.SIGTERM), ("before-manifest", signal.SIGINT)],
                         ids=["after-first-config-sigterm", "before-manifest-sigint"])
def test_signal_during_write_back_finishes_it(dnx, tiny_repo, tmp_path, where, sig):
    """A signal inside the write-back is held until configs and manifest are all written; then 128 + signal."""
    old = _configs(tiny_repo)
    r = _tune(dnx, tiny_repo, tmp_path / "tune", f"tune-write-back:{where}:{signal.Signals(sig).name}")
    assert r.returncode == 128 + sig, r.stdout + r.stderr
    assert one_error_line(r.stderr) == f"Error: interrupted by {signal.Signals(sig).name}"
    now = _configs(tiny_repo)
    assert _assert_consistent(tiny_repo, old, now) == set(MODELS), "the write-back was cut short"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("where", ["after-first-config", "before-manifest"])
def test_failed_write_during_write_back_leaves_the_previous_repository(dnx, tiny_repo, tmp_path, where):
    """A write that fails inside the write-back (a full disk): exit 1, one line, every file as before."""
    before = tree_digest(tiny_repo)
    r = _tune(dnx, tiny_repo, tmp_path / "tune", f"tune-write-back:{where}:error")
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert "injected write failure" in line and str(tiny_repo) in line, line
    assert tree_digest(tiny_repo) == before


def test_corrupt_manifest_is_refused_before_any_config_changes(dnx, tiny_repo, tmp_path):
    manifest = tiny_repo / "dnx-manifest.json"
    manifest.write_text(manifest.read_text()[:40])  # cut mid-object: not JSON any more
    before = tree_digest(tiny_repo)
    r = _tune(dnx, tiny_repo, tmp_path / "tune")
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert "dnx-manifest.json is unreadable or corrupt" in line and "dnx export" in line, line
    assert tree_digest(tiny_repo) == before


def test_read_only_repository_is_refused_before_measuring(dnx, tiny_repo, tmpfs):
    """A read-only file system refuses root too (permission bits do not), so this runs as root as well."""
    import shutil
    import subprocess

    where = tmpfs("8m")
    repo = where / "model_repository"
    shutil.copytree(tiny_repo, repo)
    r = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # whoever could mount it can remount it
    before = tree_digest(repo)
    r = _tune(dnx, repo, tiny_repo.parent / "tune")
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert "no write permission" in line and "--dry-run" in line, line
    assert tree_digest(repo) == before


@pytest.mark.server
def test_full_results_disk_is_one_line_and_leaves_the_manifest(dnx, tiny_repo, tmpfs):
    """`--out` on a full disk: one line, no traceback, and the repository (its previous tune record
    included) byte for byte as before: a measurement the disk made fail is not a decision."""

    from dnx.serving.server import TritonServer

    manifest = tiny_repo / "dnx-manifest.json"
    doc = json.loads(manifest.read_text())
    doc["models"][MODELS[0]]["tune"] = {"throughput": 123.0, "objective": "load", "confirmed": True}
    doc["tuning"] = {"objective": "load", "models": {MODELS[0]: {"winner": "previous run's", "figure": "123 infer/s"}}}
    manifest.write_text(json.dumps(doc, indent=2) + "\n")
    before = tree_digest(tiny_repo)
    disk = tmpfs("4m")
    fill_disk(disk)
    with TritonServer(tiny_repo, grpc_port=0, http_port=0, metrics_port=0, log_file=tiny_repo.parent / "log") as server:
        r = dnx.run("tune", "--repository", tiny_repo, "--url", server.grpc_url, "--out", disk / "tune",
                    "--models", MODELS[0], *FAST, timeout=600)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert f"no space left on the device of {disk / 'tune'}" in line, line
    assert f"{tiny_repo} and its manifest are unchanged" in line and "rerun `dnx tune`" in line, line
    assert tree_digest(tiny_repo) == before
