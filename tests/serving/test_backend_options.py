"""Config parameters -> ONNX Runtime options and request batching, as the Python backends use them.

dnx/runtimes/backend_common.py is the one copy the backends (beside their model.py) and dnx's
in-process runners share; these tests need no server (test_backend*.py drive it inside one).
"""

import numpy as np
import pytest

from dnx.runtimes import backend_common as common


def _params(**params):
    return common.config_parameters({"parameters": {k: {"string_value": v} for k, v in params.items()}})


def test_thread_and_memory_parameters():
    import onnxruntime as ort
    opts = common.ort_session_options(_params(intra_op_thread_count="3", inter_op_thread_count="2", execution_mode="1",
                                              enable_mem_area="0", enable_mem_pattern="0"))
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 2)
    assert opts.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert opts.enable_cpu_mem_arena is False and opts.enable_mem_pattern is False
    assert common.ort_session_options(_params(enable_mem_arena="1")).enable_cpu_mem_arena is True


def test_defaults_leave_choices_to_onnxruntime():
    import onnxruntime as ort
    opts = common.ort_session_options(_params())
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (0, 0)
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert common.ort_run_options(_params()) is None


@pytest.mark.parametrize("level,name", [(-1, "ORT_ENABLE_BASIC"), (1, "ORT_ENABLE_EXTENDED"), (2, "ORT_DISABLE_ALL")])
def test_graph_optimization_level_like_the_cpp_backend(level, name):
    import onnxruntime as ort
    assert common.ort_session_options(_params(), level).graph_optimization_level == getattr(ort.GraphOptimizationLevel, name)


def test_arena_shrinkage_is_a_run_option():
    run = common.ort_run_options(_params(**{"memory.enable_memory_arena_shrinkage": "cpu:0"}))
    assert run.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_in_process_session_uses_the_served_parameters(onnx_fp32_path):
    from dnx.runtimes import onnxruntime

    sess = onnxruntime.session(onnx_fp32_path, {"intra_op_thread_count": "1", "inter_op_thread_count": "1"})
    assert sess.get_session_options().intra_op_num_threads == 1
    assert sess.get_session_options().inter_op_num_threads == 1


def _run_doubling(calls):
    def run(feed, rows):
        calls.append(rows)
        x = feed["x"]
        if x.shape[-1] != 4:
            raise ValueError(f"width {x.shape[-1]} is not 4")
        return [2 * x]
    return run


def test_one_run_per_group_of_equal_shapes_and_errors_stay_with_their_requests():
    requests = [np.full((1, 4), 1.0), np.full((2, 4), 2.0), np.full((1, 5), 3.0), np.full((1, 4), 4.0)]
    calls = []
    answers = common.execute_batched(requests, lambda r, n: r, _run_doubling(calls), input_names=["x"], max_batch_size=4)
    assert sorted(calls) == [1, 4]  # the three width-4 requests ran together, 4 rows
    assert [a[1] for a in answers] == [None, None, "width 5 is not 4", None]
    for request, (outputs, _) in zip(requests, answers):
        if outputs is not None:
            np.testing.assert_array_equal(outputs[0], 2 * request)  # each request gets its own rows back


def test_check_refuses_single_requests_and_runs_the_rest():
    def full_batches_only(batch):
        if batch != 2:
            raise ValueError("expected requests with batch size 2; set parameter ENABLE_BATCH_PADDING")
    requests = [np.ones((1, 4)), np.ones((2, 4))]
    calls = []
    answers = common.execute_batched(requests, lambda r, n: r, _run_doubling(calls), input_names=["x"],
                                     max_batch_size=2, check=full_batches_only)
    assert "ENABLE_BATCH_PADDING" in answers[0][1] and answers[1][1] is None and calls == [2]


def test_without_a_batch_dimension_every_request_runs_alone():
    requests = [np.ones(4), np.ones(4)]
    calls = []
    answers = common.execute_batched(requests, lambda r, n: r, _run_doubling(calls), input_names=["x"], max_batch_size=0)
    assert calls == [1, 1] and all(np.array_equal(a[0][0], 2 * np.ones(4)) for a in answers)


def test_pad_batch_fills_zeros_up_to_the_fixed_batch():
    padded = common.pad_batch({"x": np.ones((1, 3), np.float32)}, 4)["x"]
    assert padded.shape == (4, 3) and padded.dtype == np.float32 and padded[1:].sum() == 0
    same = np.ones((4, 3))
    assert common.pad_batch({"x": same}, 4)["x"] is same


def test_instances_share_one_models_streams_and_threads():
    """N instance processes get the streams and threads the C++ backend's one compiled model has."""
    props = {"NUM_STREAMS": "2", "PERFORMANCE_HINT": "LATENCY"}
    assert common.openvino_process_share(props, 1, 2) == props  # one instance: unchanged
    two = common.openvino_process_share(props, 2, 2)
    assert two == {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "1",
                   "ENABLE_CPU_PINNING": False}
    assert props == {"NUM_STREAMS": "2", "PERFORMANCE_HINT": "LATENCY"}  # the input is not modified
    # Explicit threads are split too; never below one stream or one thread.
    assert common.openvino_process_share({"INFERENCE_NUM_THREADS": "8", "NUM_STREAMS": "4"}, 2, 16) == {
        "INFERENCE_NUM_THREADS": "4", "NUM_STREAMS": "2", "ENABLE_CPU_PINNING": False}
    assert common.openvino_process_share({"NUM_STREAMS": "1"}, 3, 2)["NUM_STREAMS"] == "1"
    assert common.openvino_process_share({"NUM_STREAMS": "AUTO"}, 3, 2) == {
        "NUM_STREAMS": "AUTO", "INFERENCE_NUM_THREADS": "1", "ENABLE_CPU_PINNING": False}


def test_instance_count_sums_the_groups():
    assert common.instance_count({}) == 1
    assert common.instance_count({"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}) == 2
    assert common.instance_count({"instance_group": [{"count": 2}, {"kind": "KIND_CPU"}]}) == 3


def test_batch_buffers_join_pad_and_never_leak_an_earlier_batch():
    buffers = common.BatchBuffers(pad_to=4, capacity=4)
    big = buffers.join({"x": [np.full((1, 3), 7.0, np.float32), np.full((2, 3), 8.0, np.float32)]})["x"]
    np.testing.assert_array_equal(big, [[7] * 3, [8] * 3, [8] * 3, [0] * 3])
    # The next, smaller batch reuses the buffer: the rows the first one wrote must be zero again.
    small = buffers.join({"x": [np.full((1, 3), 5.0, np.float32)]})["x"]
    np.testing.assert_array_equal(small, [[5] * 3, [0] * 3, [0] * 3, [0] * 3])
    assert np.shares_memory(big, small)  # one buffer, allocated once
    full = np.ones((4, 3), np.float32)
    assert buffers.join({"x": [full]})["x"] is full  # a lone full batch is passed on, not copied


def test_batch_buffers_without_padding_concatenate_only_several_requests():
    buffers = common.BatchBuffers(capacity=16)
    one = np.ones((1, 2), np.float32)
    assert buffers.join({"x": [one]})["x"] is one
    joined = buffers.join({"x": [one, 2 * one, 3 * one]})["x"]
    np.testing.assert_array_equal(joined, [[1, 1], [2, 2], [3, 3]])
    # Another shape or dtype gets a buffer of its own instead of a wrong view.
    wide = buffers.join({"x": [np.ones((1, 3)), np.zeros((1, 3))]})["x"]
    assert wide.shape == (2, 3) and wide.dtype == np.float64 and wide[1].sum() == 0


def test_reused_buffers_answer_each_request_with_its_own_rows():
    """Several executes through one BatchBuffers, as one backend instance runs them."""
    buffers = common.BatchBuffers(pad_to=4, capacity=4)
    calls = []
    for round_ in range(3):
        requests = [np.full((1, 4), 10 * round_ + i, np.float32) for i in range(3 - round_)]
        answers = common.execute_batched(requests, lambda r, n: r, _run_doubling(calls), input_names=["x"],
                                         max_batch_size=4, buffers=buffers)
        for request, (outputs, error) in zip(requests, answers):
            assert error is None
            np.testing.assert_array_equal(outputs[0], 2 * request)
    assert calls == [3, 2, 1]
