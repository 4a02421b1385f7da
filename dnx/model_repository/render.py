"""Render Triton ``config.pbtxt`` files from the Jinja2 template and check them.

Every rendered config is parsed back into tritonclient's ``model_config_pb2.ModelConfig``
before it is returned: a config that does not parse is a dnx bug, caught here rather
than by the server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dnx.errors import DnxError, InputError


@dataclass
class TritonConfig:
    """Everything one model's ``config.pbtxt`` says, as data."""

    name: str
    max_batch_size: int
    input_name: str
    output_name: str
    input_dims: tuple[int, ...]
    output_dims: tuple[int, ...]
    backend: str | None = None  # "onnxruntime" | "openvino"
    platform: str | None = None  # "tensorrt_plan"
    default_model_filename: str | None = None
    label_filename: str | None = "labels.txt"
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"  # KIND_CPU | KIND_GPU
    dynamic_batching: bool = True
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
    warmup_batch_sizes: list[int] = field(default_factory=lambda: [1])
    cuda_graphs: bool = False
    trt_accelerator: str | None = None  # None | "fp32" | "fp16"
    input_dtype: str = "TYPE_FP32"  # TYPE_STRING: encoded images (the ensemble's Python preprocess model)

    @classmethod
    def from_served(cls, config: dict) -> "TritonConfig":
        """The config a server reports (``get_model_config`` as JSON, gRPC or HTTP) as a :class:`TritonConfig`.

        Lenient on purpose: an ensemble or a model with several inputs still reads (first input and
        output, the instance groups summed), so instances, batching and fill level are derived from
        one type whatever the source. gRPC's JSON omits zero defaults that HTTP's includes.
        """
        first = lambda key: (config.get(key) or [{}])[0]  # noqa: E731
        groups = config.get("instance_group") or [{}]
        dyn = config.get("dynamic_batching")
        params = {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        return cls(
            name=config.get("name", ""), max_batch_size=int(config.get("max_batch_size", 0)),
            input_name=first("input").get("name", ""), output_name=first("output").get("name", ""),
            input_dims=tuple(int(d) for d in first("input").get("dims", [])),
            output_dims=tuple(int(d) for d in first("output").get("dims", [])),
            backend=config.get("backend") or None, platform=config.get("platform") or None,
            default_model_filename=config.get("default_model_filename") or None,
            label_filename=first("output").get("label_filename") or None,
            instance_count=max(1, sum(int(g.get("count", 1)) for g in groups)),
            instance_kind=groups[0].get("kind") or "KIND_CPU",
            dynamic_batching=dyn is not None,
            preferred_batch_sizes=[int(b) for b in (dyn or {}).get("preferred_batch_size", [])],
            max_queue_delay_us=int((dyn or {}).get("max_queue_delay_microseconds", 0)),
            parameters=params,
            warmup_batch_sizes=[int(w.get("batch_size", 0)) for w in config.get("model_warmup") or []],
            cuda_graphs=bool(((config.get("optimization") or {}).get("cuda") or {}).get("graphs")),
        )

    def check(self) -> None:
        """Raise :class:`DnxError` for a config Triton would reject."""
        if self.max_batch_size < 1:
            raise DnxError(f"{self.name}: max_batch_size must be >= 1 (got {self.max_batch_size}); pass --max-batch 1 or more")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise DnxError(
                f"{self.name}: preferred batch sizes {bad} are outside 1..{self.max_batch_size}; "
                "lower --preferred-batch or raise --max-batch"
            )
        if self.instance_count < 1:
            raise DnxError(f"{self.name}: instance count must be >= 1; pass --instances 1 or more")
        if bool(self.backend) == bool(self.platform):
            raise DnxError(f"{self.name}: exactly one of backend/platform must be set (dnx bug)")


@lru_cache(maxsize=1)
def config_template():
    """The Jinja2 template every model's ``config.pbtxt`` is rendered from (loaded once)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dnx.model_repository", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("config.pbtxt.j2")


def parse_config(text: str):
    """Parse protobuf text into ``model_config_pb2.ModelConfig``; raise :class:`DnxError` if invalid."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    msg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise DnxError(f"rendered config.pbtxt does not parse as Triton ModelConfig: {exc} (dnx bug)") from exc
    return msg


def parse_config_file(path: str | os.PathLike):
    """Parse a ``config.pbtxt`` on disk, a file the user may have edited: what does not parse is theirs to fix.

    Raises :class:`InputError` ``"<path>:<line>: <protobuf message>; fix the file or re-export"``.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as text ({exc}); fix the file or re-export") from None
    msg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        line = exc.GetLine() if hasattr(exc, "GetLine") else None
        where = f"{path}:{line}" if line else str(path)
        detail = re.sub(r"^\d+:\d+ : ", "", str(exc).strip()).rstrip(".")
        raise InputError(f"{where}: {detail}; fix the file or re-export") from None
    return msg


def expected_config(cfg: TritonConfig):
    """The ``model_config_pb2.ModelConfig`` that ``cfg`` means, built field by field (no template)."""
    from tritonclient.grpc import model_config_pb2 as pb

    msg = pb.ModelConfig(name=cfg.name, max_batch_size=cfg.max_batch_size)
    if cfg.platform:
        msg.platform = cfg.platform
    if cfg.backend:
        msg.backend = cfg.backend
    if cfg.default_model_filename:
        msg.default_model_filename = cfg.default_model_filename
    msg.version_policy.latest.num_versions = 1
    msg.input.add(name=cfg.input_name, data_type=pb.DataType.Value(cfg.input_dtype), dims=list(cfg.input_dims),
                  format=pb.ModelInput.FORMAT_NCHW if len(cfg.input_dims) == 3 else pb.ModelInput.FORMAT_NONE)
    out = msg.output.add(name=cfg.output_name, data_type=pb.TYPE_FP32, dims=list(cfg.output_dims))
    if cfg.label_filename:
        out.label_filename = cfg.label_filename
    msg.instance_group.add(count=cfg.instance_count, kind=pb.ModelInstanceGroup.Kind.Value(cfg.instance_kind))
    if cfg.dynamic_batching:
        msg.dynamic_batching.preferred_batch_size.extend(cfg.preferred_batch_sizes)
        msg.dynamic_batching.max_queue_delay_microseconds = cfg.max_queue_delay_us
    for key, value in cfg.parameters.items():
        msg.parameters[key].string_value = value
    if cfg.cuda_graphs:
        msg.optimization.cuda.graphs = True
    if cfg.trt_accelerator:
        acc = msg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters.update({"precision_mode": cfg.trt_accelerator.upper(), "max_workspace_size_bytes": "4294967296",
                               "trt_engine_cache_enable": "1"})
    for bs in cfg.warmup_batch_sizes:
        warm = msg.model_warmup.add(name=f"warmup_batch_{bs}", batch_size=bs)
        data = warm.inputs[cfg.input_name]
        data.data_type = pb.DataType.Value(cfg.input_dtype)
        data.dims.extend(cfg.input_dims)
        data.random_data = True
    return msg


def render_config(cfg: TritonConfig) -> str:
    """Render ``cfg`` to protobuf text and verify it parses into exactly :func:`expected_config`."""
    cfg.check()
    text = config_template().render(c=cfg).strip() + "\n"
    msg = parse_config(text)
    expected = expected_config(cfg)
    if msg != expected:
        from google.protobuf import text_format

        diff = text_format.MessageToString(expected, as_one_line=True)
        raise DnxError(f"{cfg.name}: rendered config.pbtxt does not say what the config means (dnx bug); expected {diff}")
    return text
