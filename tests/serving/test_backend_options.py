"""The `onnxruntime` Python backend reads the C++ backend's config parameters (no server needed).

``triton_python_backend_utils`` is plain Python in the nvidia-pytriton wheel, so the backend
module imports here; only ``execute`` needs the stub (covered by test_backend.py).
"""

import importlib.util
import sys

import pytest

from dnx.serving.server import BACKENDS_SOURCE, find_local_triton


@pytest.fixture(scope="module")
def backend():
    ort = pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(find_local_triton().python_backend))
    try:
        spec = importlib.util.spec_from_file_location("dnx_ort_backend", BACKENDS_SOURCE / "onnxruntime" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module, ort


def _config(params=None, level=None):
    cfg = {"parameters": {k: {"string_value": v} for k, v in (params or {}).items()}}
    if level is not None:
        cfg["optimization"] = {"graph": {"level": level}}
    return cfg


def test_thread_and_memory_parameters(backend):
    module, ort = backend
    opts = module._session_options(_config({
        "intra_op_thread_count": "3", "inter_op_thread_count": "2", "execution_mode": "1",
        "enable_mem_area": "0", "enable_mem_pattern": "0",
    }))
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 2)
    assert opts.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert opts.enable_cpu_mem_arena is False and opts.enable_mem_pattern is False
    assert module._session_options(_config({"enable_mem_arena": "1"})).enable_cpu_mem_arena is True


def test_defaults_leave_choices_to_onnxruntime(backend):
    module, ort = backend
    opts = module._session_options(_config())
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (0, 0)
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert module._run_options(_config()) is None


@pytest.mark.parametrize("level,name", [(-1, "ORT_ENABLE_BASIC"), (1, "ORT_ENABLE_EXTENDED"), (2, "ORT_DISABLE_ALL")])
def test_graph_optimization_level_like_the_cpp_backend(backend, level, name):
    module, ort = backend
    assert module._session_options(_config(level=level)).graph_optimization_level == getattr(ort.GraphOptimizationLevel, name)


def test_arena_shrinkage_is_a_run_option(backend):
    module, ort = backend
    run = module._run_options(_config({"memory.enable_memory_arena_shrinkage": "cpu:0"}))
    assert run.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
