"""Golden tests of rendered config.pbtxt files, parsed back with Triton's ModelConfig proto.

Regenerate the golden files after an intended template change with
``DNX_UPDATE_GOLDEN=1 pytest tests/model_repository/test_render.py`` (changed files are rewritten and
their tests fail once, for review; refused with ``CI=true``; see ``tests/golden.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from dnx.errors import DnxError
from dnx.model_repository.render import TritonConfig, parse_config, render_config
from tests.golden import check_golden

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"


def _base(**kw) -> TritonConfig:
    args = dict(name="densenet121_onnx", max_batch_size=16, input_name="input", output_name="logits",
                input_dims=(3, 224, 224), output_dims=(1000,), backend="onnxruntime")
    args.update(kw)
    return TritonConfig(**args)


CASES = {
    "onnxruntime_cpu": _base(parameters={"intra_op_thread_count": "2", "inter_op_thread_count": "1"}),
    "onnxruntime_gpu_trt_ep": _base(instance_kind="KIND_GPU", preferred_batch_sizes=[4, 8], max_queue_delay_us=100,
                                    trt_accelerator="fp16", name="densenet121_onnx_fp16"),
    "tensorrt_plan": _base(name="densenet121_trt_int8", backend=None, platform="tensorrt_plan",
                           instance_kind="KIND_GPU", instance_count=2, preferred_batch_sizes=[8, 16],
                           max_queue_delay_us=200, cuda_graphs=True, warmup_batch_sizes=[1, 16]),
    "openvino_cpu": _base(name="densenet121_openvino_bf16", backend="openvino",
                          max_batch_size=1,
                          parameters={"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "HINT_BF16": "YES"}),
    # The ensemble's preprocess model as `dnx tune` rewrites it: the same bytes as its own template's.
    "python_preprocess": _base(name="densenet121_preprocess", backend="python", input_name="image", input_dims=(1,),
                               input_dtype="TYPE_STRING", output_name="input", output_dims=(3, 224, 224),
                               label_filename=None, instance_count=2, warmup_batch_sizes=[],
                               parameters={"resize": "256", "crop": "224", "interpolation": "bilinear",
                                           "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    check_golden(GOLDEN / f"{case}.pbtxt", render_config(CASES[case]))


def test_parsed_fields():
    msg = parse_config(render_config(CASES["tensorrt_plan"]))
    assert msg.platform == "tensorrt_plan" and msg.backend == ""
    assert list(msg.input[0].dims) == [3, 224, 224]
    assert msg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(msg.output[0].dims) == [1000] and msg.output[0].label_filename == "labels.txt"
    assert list(msg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert msg.dynamic_batching.max_queue_delay_microseconds == 200
    assert msg.instance_group[0].count == 2 and msg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert msg.optimization.cuda.graphs
    assert [w.batch_size for w in msg.model_warmup] == [1, 16]

    cpu = parse_config(render_config(CASES["onnxruntime_cpu"]))
    assert cpu.parameters["intra_op_thread_count"].string_value == "2"
    assert cpu.HasField("dynamic_batching") and not cpu.dynamic_batching.preferred_batch_size

    ep = parse_config(render_config(CASES["onnxruntime_gpu_trt_ep"]))
    acc = ep.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"


def test_image_format_only_for_chw_inputs():
    assert "FORMAT_NCHW" in render_config(CASES["onnxruntime_cpu"])
    flat = parse_config(render_config(_base(input_dims=(5,))))
    assert flat.input[0].format == model_config_pb2.ModelInput.FORMAT_NONE


def test_golden_files_parse_independently():
    paths = sorted(GOLDEN.glob("*.pbtxt"))
    assert [p.stem for p in paths] == sorted(CASES)  # one per case, none missing: the loop cannot pass empty
    for path in paths:
        text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
        ({"preferred_batch_sizes": [32]}, "outside 1..16"),
        ({"instance_count": 0}, "instance count"),
        ({"platform": "tensorrt_plan"}, "exactly one of backend/platform"),
    ],
)
def test_invalid_configs_are_refused(kw, match):
    with pytest.raises(DnxError, match=match):
        render_config(_base(**kw))


def test_unparseable_text_is_caught():
    with pytest.raises(DnxError, match="does not parse"):
        parse_config('name: "x"\nmax_batch_size: sixteen\n')


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_parses_into_exactly_the_typed_config(case):
    from dnx.model_repository.render import expected_config

    cfg = CASES[case]
    assert parse_config(render_config(cfg)) == expected_config(cfg)


def test_a_template_that_drops_a_field_is_caught(monkeypatch):
    """The check compares every field: a template losing one (here the queue delay) must fail."""
    import jinja2

    from dnx.model_repository import render

    env = render.config_template().environment
    source = env.loader.get_source(env, "config.pbtxt.j2")[0]
    broken = source.replace("max_queue_delay_microseconds: {{ c.max_queue_delay_us }}", "")
    assert broken != source
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    monkeypatch.setattr(render, "config_template", lambda: env.from_string(broken))
    with pytest.raises(DnxError, match="does not say what the config means"):
        render_config(_base(max_queue_delay_us=500))
    render_config(_base(max_queue_delay_us=0))  # 0 is the field's default: nothing is lost
