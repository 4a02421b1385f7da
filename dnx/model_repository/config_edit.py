"""Read a dnx-rendered ``config.pbtxt`` back into :class:`~dnx.model_repository.render.TritonConfig`,
change it, and write it again through the same template (used by ``dnx tune``).

Only configs the template can express are accepted (one input, one output, one instance
group, string parameters): anything else would be lost on re-rendering, so it is refused.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from dnx.errors import InputError
from dnx.model_repository.layout import atomic_write_text
from dnx.model_repository.render import TritonConfig, parse_config, render_config

ORIG_SUFFIX = ".orig"
ORIG_NAME = "config.pbtxt" + ORIG_SUFFIX  # the untuned config, kept by the first write_config


def config_from_text(text: str, where: str = "config.pbtxt") -> TritonConfig:
    """The :class:`TritonConfig` whose rendering reproduces ``text``; :class:`InputError` if it cannot."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    msg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise InputError(f"{where} does not parse as a Triton ModelConfig ({exc}); fix it or re-export the model") from None
    hint = f"{where} was not written by dnx's template; tune only dnx-exported models (re-export with `dnx export`)"
    if len(msg.input) != 1 or len(msg.output) != 1 or len(msg.instance_group) != 1 or msg.ensemble_scheduling.step:
        raise InputError(f"{hint} (it needs one input, one output and one instance_group)")
    # A protobuf map forgets the order of the text; keep it so a re-rendered file reads the same.
    order = re.findall(r'parameters\s*:?\s*{\s*key\s*:\s*"([^"]+)"', text)
    keys = [k for k in dict.fromkeys(order) if k in msg.parameters] + sorted(k for k in msg.parameters if k not in order)
    params = {k: msg.parameters[k].string_value for k in keys}
    accel = None
    for acc in msg.optimization.execution_accelerators.gpu_execution_accelerator:
        if acc.name == "tensorrt":
            accel = acc.parameters.get("precision_mode", "FP32").lower()
    inp, out, group = msg.input[0], msg.output[0], msg.instance_group[0]
    cfg = TritonConfig(
        name=msg.name, max_batch_size=msg.max_batch_size, input_name=inp.name, output_name=out.name,
        input_dims=tuple(int(d) for d in inp.dims), output_dims=tuple(int(d) for d in out.dims),
        backend=msg.backend or None, platform=msg.platform or None,
        default_model_filename=msg.default_model_filename or None, label_filename=out.label_filename or None,
        instance_count=group.count or 1, instance_kind=msg.instance_group[0].Kind.Name(group.kind),
        dynamic_batching=msg.HasField("dynamic_batching"),
        preferred_batch_sizes=[int(b) for b in msg.dynamic_batching.preferred_batch_size],
        max_queue_delay_us=int(msg.dynamic_batching.max_queue_delay_microseconds), parameters=params,
        warmup_batch_sizes=[int(w.batch_size) for w in msg.model_warmup],
        cuda_graphs=bool(msg.optimization.cuda.graphs), trt_accelerator=accel,
        input_dtype=model_config_pb2.DataType.Name(inp.data_type),
    )
    if parse_config(render_config(cfg)) != msg:
        raise InputError(f"{hint} (re-rendering it would change settings dnx does not manage)")
    return cfg


def read_config(model_dir: str | os.PathLike) -> TritonConfig:
    """``<model_dir>/config.pbtxt`` as a :class:`TritonConfig`."""
    path = Path(model_dir) / "config.pbtxt"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}; re-export the model with `dnx export`") from None
    return config_from_text(text, str(path))


def load_model_json(text: str) -> str:
    """Config text (protobuf text format) as the JSON Triton's ``load_model(name, config=...)`` takes."""
    from google.protobuf import json_format

    return json_format.MessageToJson(parse_config(text), preserving_proto_field_name=True)


def config_json(cfg: TritonConfig) -> str:
    """The JSON form Triton's ``load_model(name, config=...)`` takes, from the rendered text."""
    return load_model_json(render_config(cfg))


def repository_config_json(model_dir: str | os.PathLike) -> str:
    """``<model_dir>/config.pbtxt`` as load_model JSON. Reloading a model after a config override needs
    it: ``load_model(name)`` alone keeps the override (Triton sees unchanged files and does nothing)."""
    return load_model_json((Path(model_dir) / "config.pbtxt").read_text(encoding="utf-8"))


def previous_config_json(model_dir: str | os.PathLike) -> str | None:
    """The untuned ``config.pbtxt.orig`` of a model ``dnx tune`` rewrote, as load_model JSON; None if untuned."""
    orig = Path(model_dir) / ORIG_NAME
    return load_model_json(orig.read_text(encoding="utf-8")) if orig.is_file() else None


def tuned_models(repository: str | os.PathLike) -> list[str]:
    """The models of ``repository`` whose config.pbtxt ``dnx tune`` rewrote (each keeps its ``config.pbtxt.orig``)."""
    try:
        return sorted(p.parent.name for p in Path(repository).glob(f"*/{ORIG_NAME}") if p.is_file())
    except OSError:
        return []


def write_config(model_dir: str | os.PathLike, cfg: TritonConfig) -> Path:
    """Render ``cfg`` into ``<model_dir>/config.pbtxt`` atomically, keeping the first previous one as
    ``config.pbtxt.orig`` (never overwritten, so it stays the untuned config)."""
    path = Path(model_dir) / "config.pbtxt"
    text = render_config(cfg)
    orig = path.with_name(ORIG_NAME)
    if path.is_file() and not orig.exists():
        tmp = orig.with_name(f".{orig.name}.tmp")
        shutil.copy2(path, tmp)
        os.replace(tmp, orig)
    atomic_write_text(path, text)
    return path
