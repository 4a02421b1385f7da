"""Golden answers: what every model of a repository answered when its parity gate passed.

``dnx export`` writes ``<repo>/dnx-golden.json`` beside the manifest (one file, so Triton never
sees a folder it could take for a model and ``dnx publish`` ships it like the manifest). It holds

* a few encoded photographs (scikit-image's shipped ones, re-encoded as JPEG so the set stays
  near 200 KB; the stored bytes are what the expected outputs were computed from);
* for every variant that was written: its output on those photographs (FP32, base64: FP16 would
  round logits of magnitude 10 by ~5e-3, past the FP32 gate's 1e-3), the top-5 classes, the
  gate it passed (:attr:`dnx.spec.ModelSpec.gates`) and the expected served config;
* for the ensemble (bytes in, probabilities out): the same, computed from its variant's logits.

:func:`dnx.ops.check.check` reads it with only tritonclient, numpy and Pillow.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dnx.errors import InputError
from dnx.hashing import sha256_bytes, sha256_file
from dnx.model_repository.layout import atomic_write_text
from dnx.parity import run_outputs
from dnx.preprocess import preprocess_bytes, sample_photographs

GOLDEN_NAME = "dnx-golden.json"
FORMAT = "dnx-golden/1"
GOLDEN_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
JPEG_QUALITY = 90
MAX_SIDE = 512  # the models see 224x224 crops; larger photographs only add bytes
TOP_K = 5

# Fields of a Triton model config that dnx decides and `dnx check` compares with the served one
# (everything else is Triton's autofill or defaults that do not change the answers).
CONFIG_FIELDS = ("backend", "platform", "max_batch_size", "inputs", "outputs", "instance_count", "instance_kind",
                 "preferred_batch_sizes", "max_queue_delay_us", "parameters", "steps")


# --------------------------------------------------------------------------- encoding


def encode_array(a: np.ndarray) -> dict:
    """``{"dtype", "shape", "data"}``: little-endian float32 bytes, base64."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(rec: dict) -> np.ndarray:
    """The array of :func:`encode_array`; raises :class:`InputError` when the record is damaged."""
    try:
        a = np.frombuffer(base64.b64decode(rec["data"], validate=True), dtype="<f4")
        return a.reshape([int(x) for x in rec["shape"]]).astype(np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"golden output record is damaged ({exc}); re-export the repository with `dnx export`") from None


def golden_images(limit: int = len(GOLDEN_PHOTOS)) -> list[tuple[str, bytes]]:
    """``(name, JPEG bytes)`` of the golden photographs: shipped ones, at most MAX_SIDE wide, re-encoded."""
    from PIL import Image


    by_name = {p.name: p for p in sample_photographs()}
    out = []
    for name in GOLDEN_PHOTOS[:limit]:
        if name not in by_name:
            continue
        with Image.open(by_name[name]) as img:
            img = img.convert("RGB")
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        out.append((Path(name).stem + ".jpg", buf.getvalue()))
    if not out:
        raise InputError("no sample photographs found for the golden set; install scikit-image")
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned as float32 (what the softmax model computes)."""
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def top_k(a: np.ndarray, k: int = TOP_K) -> list[list[int]]:
    """The ``k`` highest classes of each row, best first."""
    return np.argsort(-a, axis=1, kind="stable")[:, :k].tolist()


# --------------------------------------------------------------------------- configs as data


def normalize_config(config) -> dict:
    """The fields of :data:`CONFIG_FIELDS` from a ``ModelConfig`` protobuf, a served JSON dict or pbtxt text.

    Both sides of the comparison go through this one function, so Triton's JSON spelling
    (int64 as strings, ``string_value`` wrappers) and autofilled fields cannot cause a mismatch.
    """
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    if isinstance(config, str):
        msg = text_format.Parse(config, model_config_pb2.ModelConfig())
    elif isinstance(config, dict):
        msg = json_format.ParseDict(config.get("config", config), model_config_pb2.ModelConfig(),
                                    ignore_unknown_fields=True)
    else:
        msg = config
    groups = list(msg.instance_group)
    kind = model_config_pb2.ModelInstanceGroup.Kind.Name(groups[0].kind) if groups else None
    db = msg.dynamic_batching if msg.HasField("dynamic_batching") else None
    tensor = lambda t: {"name": t.name, "data_type": model_config_pb2.DataType.Name(t.data_type),  # noqa: E731
                        "dims": [int(d) for d in t.dims]}
    preferred = [int(b) for b in db.preferred_batch_size] if db else None
    if preferred == [int(msg.max_batch_size)]:
        preferred = []  # Triton fills an empty preferred_batch_size in with [max_batch_size]
    platform = msg.platform or None
    if msg.backend == "onnxruntime" and platform == "onnxruntime_onnx":
        platform = None  # Triton fills the platform in for the onnxruntime backend
    return {
        "backend": msg.backend or None, "platform": platform, "max_batch_size": int(msg.max_batch_size),
        "inputs": [tensor(t) for t in msg.input], "outputs": [tensor(t) for t in msg.output],
        "instance_count": sum(int(g.count) or 1 for g in groups) if groups else None,
        "instance_kind": None if msg.platform == "ensemble" else kind,
        "preferred_batch_sizes": preferred,
        "max_queue_delay_us": int(db.max_queue_delay_microseconds) if db else None,
        "parameters": {k: v.string_value for k, v in sorted(msg.parameters.items())},
        "steps": [s.model_name for s in msg.ensemble_scheduling.step],
    }


def config_differences(expected: dict, served: dict) -> list[str]:
    """``field: expected X, served Y`` for each field of ``expected`` the served config does not match."""
    out = []
    for key in CONFIG_FIELDS:
        if key not in expected:
            continue
        want, got = expected[key], served.get(key)
        if key == "instance_kind" and want is None:
            continue
        if want != got:
            out.append(f"{key}: expected {json.dumps(want)}, served {json.dumps(got)}")
    return out


# --------------------------------------------------------------------------- building


def build_golden(manifest: dict, repo: Path, outputs: dict[str, np.ndarray], images: list[tuple[str, bytes]],
                 gates: dict[str, dict], trained: bool) -> dict:
    """The golden document for ``repo``: ``outputs`` maps each variant to its logits on ``images``."""

    models = {}
    for name, entry in manifest["models"].items():
        if name not in outputs:
            continue
        models[name] = {
            "kind": "tensor", "precision": entry.get("precision"), "runtime": entry.get("runtime"),
            "versions": sorted({f.split("/")[0] for f in entry.get("files", {}) if f.split("/")[0].isdigit()}),
            "config": normalize_config((repo / name / "config.pbtxt").read_text(encoding="utf-8")),
            "gate": gates[name], "gate_passed": (entry.get("parity") or {}).get("passed", True),  # --keep-failing
            "expected": encode_array(outputs[name]), "top_k": top_k(outputs[name]),
        }
    ensemble = manifest.get("ensemble")
    if ensemble and ensemble.get("variant") in outputs:
        probs = softmax(outputs[ensemble["variant"]])
        for helper in (ensemble["preprocess"], ensemble["softmax"]):
            models[helper] = {"kind": "helper", "versions": ["1"],
                              "config": normalize_config((repo / helper / "config.pbtxt").read_text(encoding="utf-8"))}
        models[ensemble["name"]] = {
            "kind": "ensemble", "variant": ensemble["variant"], "versions": ["1"],
            "input": ensemble["input"], "output": ensemble["output"],
            "config": normalize_config((repo / ensemble["name"] / "config.pbtxt").read_text(encoding="utf-8")),
            "gate": gates[ensemble["variant"]], "expected": encode_array(probs), "top_k": top_k(probs),
        }
    return {
        "format": FORMAT, "model": manifest.get("model"), "built_at": manifest.get("built_at"),
        "weights": manifest.get("weights", {}).get("source"), "trained": trained,
        "images": [{"name": n, "sha256": sha256_bytes(b), "data": base64.b64encode(b).decode("ascii")}
                   for n, b in images],
        "models": models,
    }


def write_golden(ctx, repo: Path) -> dict:
    """Run every written variant on the golden photographs and write ``<repo>/dnx-golden.json``.

    Called by the export's write stage once the models and the ensemble are in ``repo``; returns
    the manifest's ``golden`` record (file, sha256, images, models).
    """

    images = golden_images()
    batch = np.stack([preprocess_bytes(b, ctx.spec) for _, b in images])
    trained = bool(getattr(ctx.weights, "trained", False))
    outputs, gates = {}, {}
    for m in ctx.models:
        if m.name not in ctx.manifest.models or m.runner is None:
            continue
        outputs[m.name] = np.asarray(run_outputs(m.runner, batch, ctx.spec), dtype=np.float32)
        gate = {k: v for k, v in asdict(ctx.spec.gates[m.precision]).items() if v is not None}
        if not trained:
            gate.pop("min_top1", None)  # as in dnx.parity: top-1 agreement means nothing on random weights
        gates[m.name] = gate
    doc = build_golden(ctx.manifest.to_dict(), repo, outputs, images, gates, trained)
    path = Path(repo) / GOLDEN_NAME
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return {"file": GOLDEN_NAME, "sha256": sha256_file(path), "images": [i["name"] for i in doc["images"]],
            "models": sorted(doc["models"])}


# --------------------------------------------------------------------------- reading


def read_golden(path: str | Path) -> dict:
    """Read a golden file; :class:`InputError` (one line) when it is missing or not a dnx golden set."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} not found; export the repository with a dnx that writes {GOLDEN_NAME}, "
                         "or pass --repository") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable or not JSON ({str(exc)[:100]}); pass the {GOLDEN_NAME} "
                         "`dnx export` wrote") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("models"), dict):
        raise InputError(f"{path} is not a dnx golden set (format {FORMAT!r}); pass the {GOLDEN_NAME} `dnx export` wrote")
    return doc


def verify_against_manifest(path: Path, doc: dict, manifest: dict) -> None:
    """Raise :class:`InputError` unless ``doc`` (read from ``path``) is the golden set the manifest recorded."""

    rec = manifest.get("golden")
    if not rec:
        raise InputError(f"{path.parent}: the manifest records no golden set; re-export with this dnx "
                         f"(it writes {GOLDEN_NAME})")
    if rec.get("sha256") != sha256_file(path):
        raise InputError(f"{path} does not match the sha256 the manifest recorded; it changed after export: "
                         "re-export the repository")


def image_bytes(doc: dict) -> list[tuple[str, bytes]]:
    """The golden photographs as ``(name, bytes)``, each checked against its sha256."""

    out = []
    for rec in doc.get("images") or []:
        try:
            data = base64.b64decode(rec["data"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"golden image {rec.get('name')!r} is damaged; re-export the repository") from None
        if sha256_bytes(data) != rec.get("sha256"):
            raise InputError(f"golden image {rec.get('name')!r} does not match its sha256; re-export the repository")
        out.append((rec["name"], data))
    if not out:
        raise InputError("the golden set holds no image; re-export the repository")
    return out
