"""``dnx validate``: parity of every model in a repository, locally and through a running server.

The PyTorch FP32 reference is rebuilt from the weights the manifest records (random weights
from their seed, a ``.pth`` whose hash must still match, or torchvision's ImageNet weights).
Each model runs locally with the runtime and config it is served by (:mod:`dnx.runtimes`:
ONNX Runtime, OpenVINO, TensorRT where available). With ``served=True`` the same inputs also go through the server, and the
served outputs are gated against PyTorch and compared with the local runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnx import parity
from dnx.storage.remote import local_copy
from dnx.errors import InputError
from dnx.exporter.torch_export import load_torch_model, torch_forward
from dnx.hashing import sha256_file
from dnx.manifest import Manifest, ModelRecord, load_manifest
from dnx.preprocess import load_image, probe_inputs, sample_photographs
from dnx.runtimes import model_runner
from dnx.serving.client import TritonClient, infer_encoded, infer_logits
from dnx.spec import Gate, get_spec


@dataclass
class ValidationResult:
    """Local parity report, the served one (or None), and models skipped with their reason."""

    local: parity.ParityReport
    served: parity.ParityReport | None
    skipped: dict[str, str]

    @property
    def passed(self) -> bool:
        return self.local.passed and (self.served is None or self.served.passed)


def _reference_model(manifest: Manifest, repo: Path):
    spec = get_spec(manifest.model or "densenet121")
    w = manifest.weights
    if w.get("random"):
        return load_torch_model(spec, "random", w.get("seed") or 0)[0], spec, False
    if w["source"].startswith("imagenet:"):
        return load_torch_model(spec, "imagenet")[0], spec, True
    path = Path(w["source"])
    if w.get("sha256") and path.is_file() and sha256_file(path) != w["sha256"]:
        raise InputError(f"{path} changed since {repo} was exported; re-export, or restore the original weights")
    return load_torch_model(spec, str(path))[0], spec, True


ENSEMBLE_MAX_ABS = 1e-4


def ensemble_row(repo: Path, ensemble: dict, entries: dict[str, ModelRecord], spec, trained: bool, *,
                 url: str | None, protocol: str):
    """The ensemble on the server (photographs sent as file bytes) against softmax of its variant run locally.

    The local side reads the same files through :func:`dnx.preprocess.load_image` and the
    variant's own runtime; the served side decodes them with the same code on the server.
    Gate: max abs difference of the probabilities <= 1e-4.
    """
    photos = sample_photographs()
    if not photos:
        raise InputError("no sample photographs found; install scikit-image (pip install scikit-image)")
    variant = ensemble["variant"]
    runner, why = model_runner(repo, variant, entries[variant], spec)
    name = f"{ensemble['name']} (ensemble, bytes in)"
    gate = Gate(max_abs=ENSEMBLE_MAX_ABS)
    if runner is None:
        return parity.ParityRow(name, entries[variant].precision, f"triton-{protocol}", None, gate, trained, False,
                                f"cannot run its variant {variant} here: {why}")
    logits = parity.run_outputs(runner, np.stack([load_image(p, spec) for p in photos]), spec).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected = e / e.sum(axis=1, keepdims=True)
    got = infer_encoded([p.read_bytes() for p in photos], url=url, model=ensemble["name"], protocol=protocol)
    metrics = parity.output_metrics(expected, got)
    failures = parity.gate_failures(metrics, gate, trained=False)
    reason = "; ".join(failures) if failures else f"probabilities within max_abs<={ENSEMBLE_MAX_ABS:g} of softmax({variant} local)"
    return parity.ParityRow(name, entries[variant].precision, f"triton-{protocol}", metrics, gate, trained,
                            not failures, reason, notes=f"{len(photos)} photographs as file bytes")


def validate(
    repository: str | os.PathLike = "model_repository",
    *,
    models: list[str] | None = None,
    served: bool = False,
    url: str | None = None,
    protocol: str = "grpc",
    random_inputs: int = 4,
    seed: int = 0,
    endpoint_url: str | None = None,
) -> ValidationResult:
    """Gate every model of ``repository`` against PyTorch; with ``served`` also through the server at ``url``."""
    if str(repository).startswith("s3://"):  # parity needs the model files: a verified local copy
        repository = local_copy(str(repository), endpoint_url=endpoint_url)
    repo = Path(repository)
    if not repo.is_dir():
        raise InputError(f"{repo}: no such repository; build one with `dnx export` or pass --repository")
    manifest = load_manifest(repo)
    entries = manifest.models
    ensemble = manifest.ensemble or {}
    names = models or list(entries)
    check_ensemble = served and bool(ensemble) and (models is None or ensemble["name"] in models)
    names = [n for n in names if n != ensemble.get("name")]
    unknown = [n for n in names if n not in entries]
    if unknown:
        known = list(entries) + ([ensemble["name"]] if ensemble else [])
        raise InputError(f"{unknown[0]!r} is not in {repo} (models: {', '.join(known)}); check --models")

    if served:  # fail fast, before the minutes of local work, when the server is not there
        for name in names + ([ensemble["name"]] if check_ensemble else []):
            with TritonClient(url, name, protocol):
                pass
    model, spec, trained = _reference_model(manifest, repo)
    inputs, info = probe_inputs(spec, random=random_inputs, seed=seed)
    reference = torch_forward(model, inputs)

    variants, skipped = [], {}
    for name in names:
        runner, why = model_runner(repo, name, entries[name], spec)
        if runner is None:
            skipped[name] = why
            continue
        variants.append(parity.Variant(name, entries[name].precision, runner, entries[name].runtime))
    local = parity.check_parity(reference, variants, inputs=inputs, inputs_info=info, spec=spec, trained=trained)

    served_report = None
    if served:
        rows = []
        local_out = {v.name: parity.run_outputs(v.runner, inputs, spec) for v in variants}
        for name in names:
            precision = entries[name].precision
            out = infer_logits(inputs, url=url, model=name, protocol=protocol)
            rows.append(parity.compare_arrays(f"{name} (served)", precision, reference, out, runtime=f"triton-{protocol}",
                                              spec=spec, trained=trained))
            if name in local_out:
                # Served vs the same runtime in-process: the serving path must add no error of its own.
                rows.append(parity.compare_arrays(f"{name} (served vs local)", precision, local_out[name], out,
                                                  runtime=f"triton-{protocol}", spec=spec, trained=trained))
        if check_ensemble:
            rows.append(ensemble_row(repo, ensemble, entries, spec, trained, url=url, protocol=protocol))
        served_report = parity.ParityReport(rows=rows, reference="pytorch-fp32 / local runtime", inputs=info,
                                            trained=trained)
    return ValidationResult(local, served_report, skipped)
