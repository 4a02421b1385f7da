"""The bytes-in path of a repository: ``<model>_preprocess`` -> one variant -> ``<model>_softmax``.

``dnx export`` writes three models beside the variants:

* ``<model>_preprocess``: Python backend, TYPE_STRING ``image`` (encoded JPEG/PNG/WebP, also
  BMP/TIFF/PPM/GIF: ``dnx.preprocess.ACCEPTED_FORMATS``) ->
  the variants' FP32 input, through ``dnx/preprocess.py`` copied beside its ``model.py``;
  :data:`PREPROCESS_INSTANCES` processes (each decodes one request at a time, so a second
  one uses the core the variant leaves idle between its batches) behind a dynamic batcher;
* ``<model>_softmax``: a one-node ONNX graph (Softmax over the classes) on the onnxruntime
  backend, KIND_CPU on every target (it is 4 KB of arithmetic per image);
* ``<model>``: the ensemble ``image`` -> ``probabilities`` with the labels file, so Triton's
  classification extension answers ``probability:index:label``.

Softmax is a separate step rather than a second output of every variant graph: the variants
stay byte-identical to what parity gated (logits), and tensor clients see no change.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from dnx.errors import DnxError, InputError
from dnx.hashing import sha256_file
from dnx.model_repository.layout import LABELS_NAME, atomic_write_text, model_dir
from dnx.model_repository.render import TritonConfig, parse_config, render_config

if TYPE_CHECKING:  # dnx.manifest imports this package; the records are only read here
    from dnx.manifest import ModelRecord

PREPROCESS_SOURCE = Path(__file__).parent / "python" / "preprocess_model.py"
PREPROCESS_LIBRARY = Path(__file__).resolve().parent.parent / "preprocess.py"
PREPROCESS_LIBRARY_NAME = "dnx_preprocess.py"
IMAGE_INPUT = "image"
PROBABILITIES = "probabilities"
ENSEMBLE_PLACEHOLDER = "ENSEMBLE.txt"
# Two Python-stub processes decode two images at once; a queue delay only adds latency (the model loops over its requests, batching saves
# nothing but the stub round trip), so the batcher takes what is queued without waiting.
PREPROCESS_INSTANCES = 2
PREPROCESS_QUEUE_DELAY_US = 0


@dataclass
class EnsembleConfig:
    """What the ensemble and the preprocess model configs say, as data."""

    name: str
    max_batch_size: int
    input_name: str
    output_name: str
    output_dims: tuple[int, ...]
    label_filename: str = "labels.txt"
    steps: list[dict] = field(default_factory=list)  # {"model", "inputs": {model: ensemble}, "outputs": {...}}
    instance_count: int = 1
    max_queue_delay_us: int = 0
    parameters: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=4)
def _template(name: str):
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("dnx.model_repository", "templates"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.get_template(name)


def _render(template: str, cfg: EnsembleConfig) -> str:
    if cfg.max_batch_size < 1:
        raise DnxError(f"{cfg.name}: max_batch_size must be >= 1 (dnx bug)")
    text = _template(template).render(c=cfg).strip() + "\n"
    msg = parse_config(text)
    if msg.name != cfg.name or msg.max_batch_size != cfg.max_batch_size:
        raise DnxError(f"{cfg.name}: rendered config lost its name or max_batch_size (dnx bug)")
    return text


def render_preprocess(spec, max_batch_size: int, instances: int = PREPROCESS_INSTANCES,
                      max_queue_delay_us: int = PREPROCESS_QUEUE_DELAY_US) -> str:
    """``config.pbtxt`` of ``<model>_preprocess`` (parsed back into ``ModelConfig``)."""
    if instances < 1 or max_queue_delay_us < 0:
        raise InputError(f"preprocess instances must be >= 1 and queue delay >= 0 (got {instances}, {max_queue_delay_us})")
    cfg = EnsembleConfig(
        name=spec.preprocess_name, max_batch_size=max_batch_size, input_name=IMAGE_INPUT,
        output_name=spec.input_name, output_dims=tuple(spec.input_shape), instance_count=instances,
        max_queue_delay_us=max_queue_delay_us,
        parameters={"resize": str(spec.resize), "crop": str(spec.crop), "interpolation": spec.interpolation,
                    "mean": ",".join(map(str, spec.mean)), "std": ",".join(map(str, spec.std))},
    )
    return _render("python_preprocess.pbtxt.j2", cfg)


def render_ensemble(spec, variant: str, max_batch_size: int) -> str:
    """``config.pbtxt`` of the ``<model>`` ensemble over ``variant``."""
    cfg = EnsembleConfig(
        name=spec.ensemble_name, max_batch_size=max_batch_size, input_name=IMAGE_INPUT, output_name=PROBABILITIES,
        output_dims=(spec.num_classes,),
        steps=[
            {"model": spec.preprocess_name, "inputs": {IMAGE_INPUT: IMAGE_INPUT}, "outputs": {spec.input_name: "preprocessed"}},
            {"model": variant, "inputs": {spec.input_name: "preprocessed"}, "outputs": {spec.output_name: "logits"}},
            {"model": spec.softmax_name, "inputs": {spec.output_name: "logits"}, "outputs": {PROBABILITIES: PROBABILITIES}},
        ],
    )
    return _render("ensemble.pbtxt.j2", cfg)


def softmax_onnx(path: Path, spec, opset: int = 17) -> None:
    """A one-node ONNX graph: ``probabilities = Softmax(logits, axis=1)`` for ``[N, classes]``."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, ["N", spec.num_classes])
    y = helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", spec.num_classes])
    node = helper.make_node("Softmax", [spec.output_name], [PROBABILITIES], axis=1)
    model = helper.make_model(helper.make_graph([node], f"{spec.name}_softmax", [x], [y]),
                              opset_imports=[helper.make_opsetid("", opset)], producer_name="dnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def choose_variant(models: dict[str, ModelRecord], requested: str | None = None) -> tuple[str, str]:
    """The variant the ensemble serves and why: ``(name, reason)``.

    ``models`` maps written model names to their manifest records. ``requested`` (``--serve-variant``)
    wins; else the fastest variant that passed its gate by the ``speed`` record the export measured
    on this CPU (:mod:`dnx.pipeline.speed`); else the most accurate variant that passed its gate:
    fp32 before bf16/fp16 before int8, ONNX Runtime first. A figure from another run is never
    used: it may come from another CPU, where another precision wins.
    """
    if requested:
        if requested not in models:
            raise InputError(f"--serve-variant {requested!r} was not built; choose one of: {', '.join(models)}")
        return requested, "--serve-variant"
    passed = {n: r for n, r in models.items() if r.passed}
    if not passed:
        raise InputError("no variant passed its parity gate; the ensemble needs one (fix the gate failures or pass --serve-variant)")
    fast = {n: r.get("speed")["best"] for n, r in passed.items()
            if isinstance(r.get("speed"), dict) and isinstance(r.get("speed").get("best"), (int, float))}
    if fast:
        best = max(fast, key=fast.get)
        cpu = (passed[best].get("speed").get("cpu") or {}).get("model") or "this CPU"
        return best, f"fastest on {cpu}: {fast[best]:.1f} img/s in-process"
    order = {"fp32": 0, "bf16": 1, "fp16": 1, "int8": 2}
    runtimes = {"onnxruntime": 0, "openvino": 1, "tensorrt": 2}
    best = min(passed, key=lambda n: (order.get(passed[n].precision, 9), runtimes.get(passed[n].runtime, 9)))
    return best, "most accurate variant that passed its gate"


def write_bytes_path(repo: Path, spec, variant: str, variant_max_batch: int, labels: str, *,
                     preprocess_max_batch: int = 16, preprocess_instances: int = PREPROCESS_INSTANCES,
                     preprocess_queue_delay_us: int = PREPROCESS_QUEUE_DELAY_US) -> dict:
    """Write ``<model>_preprocess``, ``<model>_softmax`` and the ``<model>`` ensemble into ``repo``.

    Returns the manifest record (names, variant, file hashes).
    """
    files: dict[str, str] = {}
    pre = model_dir(repo, spec.preprocess_name)
    pre.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PREPROCESS_SOURCE, pre / "model.py")
    shutil.copyfile(PREPROCESS_LIBRARY, pre / PREPROCESS_LIBRARY_NAME)
    pre_batch = max(preprocess_max_batch, variant_max_batch)
    atomic_write_text(repo / spec.preprocess_name / "config.pbtxt",
                      render_preprocess(spec, pre_batch, preprocess_instances, preprocess_queue_delay_us))

    soft = model_dir(repo, spec.softmax_name)
    softmax_onnx(soft / "model.onnx", spec)
    cfg = TritonConfig(name=spec.softmax_name, max_batch_size=pre_batch, input_name=spec.output_name,
                       output_name=PROBABILITIES, input_dims=(spec.num_classes,), output_dims=(spec.num_classes,),
                       backend="onnxruntime", label_filename=LABELS_NAME, instance_kind="KIND_CPU",
                       parameters={"intra_op_thread_count": "1", "inter_op_thread_count": "1"})
    atomic_write_text(repo / spec.softmax_name / "config.pbtxt", render_config(cfg))
    atomic_write_text(repo / spec.softmax_name / LABELS_NAME, labels)

    ens = model_dir(repo, spec.ensemble_name)
    ens.mkdir(parents=True, exist_ok=True)
    # Triton needs the version folder; a file keeps it through copies and object-storage uploads.
    atomic_write_text(ens / ENSEMBLE_PLACEHOLDER, "An ensemble has no model file; see ../config.pbtxt.\n")
    atomic_write_text(repo / spec.ensemble_name / "config.pbtxt", render_ensemble(spec, variant, variant_max_batch))
    atomic_write_text(repo / spec.ensemble_name / LABELS_NAME, labels)

    for name in (spec.preprocess_name, spec.softmax_name, spec.ensemble_name):
        for f in sorted((repo / name).rglob("*")):
            if f.is_file():
                files[str(f.relative_to(repo))] = sha256_file(f)
    return {"name": spec.ensemble_name, "preprocess": spec.preprocess_name, "softmax": spec.softmax_name,
            "variant": variant, "max_batch_size": variant_max_batch, "input": IMAGE_INPUT, "output": PROBABILITIES,
            "preprocess_instances": preprocess_instances, "preprocess_queue_delay_us": preprocess_queue_delay_us,
            "files": files}
