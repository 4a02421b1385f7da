"""Fail-fast checks of `dnx export` (dnx.preflight): each one stops the run before torch loads.

The subprocess test runs `python -m dnx.cli export ...` in a fresh process, as a user would, and
checks that each error is one line and arrives before torch is imported: that proves the
ordering independently of machine load. How many seconds the error takes (issue 14: under 2 s)
is measured by the benchmark `benchmarks/startup_bench.py`, not asserted here.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.errors import InputError, WeightsError
from dnx.exporter.calibration import bundled_photographs
from dnx.pipeline import ExportOptions
from dnx.preflight import cached_imagenet_weights, hub_checkpoints, network_reachable, preflight
from dnx.spec import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI in a fresh interpreter and prints, after it exits, whether torch got imported.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from dnx.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "s": time.perf_counter() - t0}))
"""


def _offline_hub(tmp_path) -> dict:
    return {"TORCH_HOME": str(tmp_path / "empty-torch-home")}


def _error_cases(tmp_path):
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    pickled = tmp_path / "pickled.pth"  # pickle.dump, not torch.save: torch would warn, then fail in many lines
    pickled.write_bytes(pickle.dumps({"features.conv0.weight": [0.0] * 4}, protocol=4))
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "readme.txt").write_text("no photographs here")
    out = str(tmp_path / "repo")
    return [
        (["--weights", str(tmp_path / "missing.pth"), "--out", out], "weights file", "not found"),
        (["--weights", str(garbage), "--out", out], "cannot load weights", "torch.save"),
        (["--weights", str(pickled), "--out", out], f"cannot load weights {pickled}: not a file written by torch.save",
         "pass a state dict saved with torch.save(model.state_dict(), path)"),
        (["--weights", "random", "--out", "/proc/dnx-repo"], "cannot write /proc/dnx-repo", "pass another --out"),
        (["--weights", "random", "--out", out, "--calib-dir", str(empty)], "--calib-dir only applies to INT8",
         "--precision int8"),
        (["--weights", "random", "--out", out, "--precision", "int8", "--calib-dir", str(empty)],
         "no JPEG/PNG images found", "--calib-synthetic"),
        (["--weights", "random", "--out", out, "--precision", "bf16", "--runtime", "onnxruntime"],
         "--precision bf16 is not built by --runtime onnxruntime", "--runtime openvino"),
        (["--weights", "random", "--out", out, "--target", "cpu", "--runtime", "tensorrt"],
         "--runtime tensorrt needs --target gpu", "--target gpu"),
    ]


def test_each_error_arrives_without_loading_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **_offline_hub(tmp_path)}
    cases = _error_cases(tmp_path)
    if not network_reachable():
        cases.append((["--weights", "imagenet", "--out", str(tmp_path / "repo")], "could not get torchvision's",
                      "--weights random"))
    for args, problem, fix in cases:
        proc = subprocess.run([sys.executable, "-c", CHILD, "export", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60)
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report["code"] == 1, (args, proc.stderr)
        assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert problem in proc.stderr and fix in proc.stderr, proc.stderr
        assert report["torch"] is False, f"{args}: torch was imported before the error"
    assert not (tmp_path / "repo").exists()


def _opts(tmp_path, **kw) -> ExportOptions:
    return ExportOptions(**{"out": tmp_path / "repo", "weights": "random", "cache_dir": tmp_path / "cache", **kw})


def test_default_int8_warns_once_with_count_and_flag(tmp_path):
    warnings = preflight(_opts(tmp_path, precisions=("int8",)))
    assert len(warnings) == 1
    assert f"the {len(bundled_photographs())} generic sample photographs bundled with scikit-image" in warnings[0]
    assert "--calib-dir" in warnings[0] and "\n" not in warnings[0]
    assert preflight(_opts(tmp_path, precisions=("int8",), calib_samples=3))[0].startswith("INT8 calibrates on the 3 ")


def test_own_images_give_no_warning_and_synthetic_is_flagged(tmp_path):
    calib = ROOT / "tests" / "fixtures" / "calib"
    assert preflight(_opts(tmp_path, precisions=("int8",), calib_dir=calib)) == []
    (warning,) = preflight(_opts(tmp_path, precisions=("int8",), calib_synthetic=True))
    assert "SYNTHETIC" in warning and "--calib-dir" in warning
    assert preflight(_opts(tmp_path, precisions=("fp32",))) == []


def test_tensorrt_only_flags_on_the_cpu_target(tmp_path):
    for attr, flag in (("cuda_graphs", "--cuda-graphs"), ("hardware_compatible", "--hardware-compatible")):
        with pytest.raises(InputError, match=f"{flag} applies to TensorRT engines only"):
            preflight(_opts(tmp_path, target="cpu", **{attr: True}))
    preflight(_opts(tmp_path, target="gpu", cuda_graphs=True))  # fine where TensorRT may run


def test_precision_no_chosen_runtime_builds(tmp_path):
    with pytest.raises(InputError, match="--precision fp16 is not built by --runtime openvino; add --runtime onnxruntime"):
        preflight(_opts(tmp_path, precisions=("fp16",), runtimes=("openvino",)))
    preflight(_opts(tmp_path, precisions=("fp16",), runtimes=("openvino", "onnxruntime")))


def test_out_and_cache_dir_must_be_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="it is a file, not a folder; pass another --out"):
        preflight(ExportOptions(out=tmp_path / "file", weights="random"))
    with pytest.raises(InputError, match="--cache-dir .* is a file, not a folder; pass another --cache-dir"):
        preflight(_opts(tmp_path, precisions=("int8",), cache_dir=tmp_path / "file" / "calib"))
    assert not list(tmp_path.glob(".dnx-preflight-*"))  # the write probe leaves nothing behind


def test_weights_file_header(tmp_path):
    import torch

    good = tmp_path / "tiny.pth"
    torch.save({"w": torch.zeros(1)}, good)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    preflight(ExportOptions(out=tmp_path / "r", weights=str(good)))
    preflight(ExportOptions(out=tmp_path / "r", weights=str(legacy)))
    other_zip = tmp_path / "photos.pth"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("a.txt", "hello")
    with pytest.raises(WeightsError, match="not a file written by torch.save"):
        preflight(ExportOptions(out=tmp_path / "r", weights=str(other_zip)))
    with pytest.raises(WeightsError, match="is a folder"):
        preflight(ExportOptions(out=tmp_path / "r", weights=str(tmp_path)))


def test_imagenet_weights_found_in_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub_checkpoints() == tmp_path / "th" / "hub" / "checkpoints"
    assert cached_imagenet_weights(DEFAULT_MODEL) is None
    hub_checkpoints().mkdir(parents=True)
    (hub_checkpoints() / "densenet121-a639ec97.pth").write_bytes(b"")  # torchvision's file name
    assert cached_imagenet_weights(DEFAULT_MODEL).name == "densenet121-a639ec97.pth"
    preflight(ExportOptions(out=tmp_path / "r", weights="imagenet"))  # cached: no network needed


def test_network_check_answers_both_ways(tmp_path):
    import socket

    with socket.socket() as srv:  # a real listening socket on 127.0.0.1
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert network_reachable(("127.0.0.1", port), 2.0) is True
    network_reachable.cache_clear()  # answers are cached per process
    assert network_reachable(("127.0.0.1", port), 2.0) is False  # closed now
    network_reachable.cache_clear()


def test_cli_reports_an_error_without_the_warnings(tmp_path):
    r = CliRunner().invoke(cli, ["export", "--precision", "int8", "--weights", "random", "--out",
                                 str(tmp_path / "a" / "b"), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 1 and "does not exist; create it or pass another --out" in r.output
    assert "Warning: INT8 calibrates on the" not in r.output  # errors come first, before warnings


def test_re_exporting_over_tuned_configs_warns_which_ones(tmp_path):
    repo = tmp_path / "repo"
    for name in ("densenet121_openvino_int8", "densenet121_preprocess", "densenet121_onnx"):
        (repo / name).mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text('name: "x"\n')
    assert preflight(_opts(tmp_path, precisions=("fp32",))) == []  # exported, never tuned
    for name in ("densenet121_preprocess", "densenet121_openvino_int8"):
        (repo / name / "config.pbtxt.orig").write_text('name: "x"\n')  # what dnx tune leaves beside a rewrite
    (warning,) = preflight(_opts(tmp_path, precisions=("fp32",)))
    assert "(densenet121_openvino_int8, densenet121_preprocess)" in warning and "densenet121_onnx" not in warning
    assert "run `dnx tune` (or `make tune`) again" in warning and "\n" not in warning

