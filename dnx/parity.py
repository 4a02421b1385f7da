"""Parity of model variants against the PyTorch FP32 reference, with pass/fail gates.

Every variant is a Polygraphy runner from :mod:`dnx.runtimes` (ONNX Runtime, OpenVINO,
TensorRT, PyTorch; anything else, e.g. a served model, through
:func:`dnx.runtimes.callable_runner`), run by Polygraphy's ``Comparator`` on the same inputs:
real photographs plus seeded random tensors (:func:`dnx.preprocess.probe_inputs`). Metrics are
computed on the logits; gates come from :attr:`dnx.spec.ModelSpec.gates`. Random weights make
top-k agreement meaningless (near-uniform logits), so top-1 is gated only with ``trained=True``.

    from dnx.runtimes import onnxruntime, torch
    report = check_parity(torch.runner(model), [Variant("densenet121_onnx", "fp32", onnxruntime.runner(p, "ort"))])
    print(report.format_table())
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dnx._lazy import lazy_import
from dnx.errors import ParityError
from dnx.preprocess import probe_inputs
from dnx.runtimes.callable import callable_runner
from dnx.spec import DEFAULT_MODEL, Gate, ModelSpec

DEFAULT_BATCH = 2  # >1 so every variant is also checked with a real batch dimension


# ---------------------------------------------------------------- metrics (pure numpy)


@dataclass(frozen=True)
class Metrics:
    """Agreement of one variant's logits with the reference logits over ``samples`` inputs."""

    samples: int
    max_abs: float
    mean_abs: float
    cos_min: float  # worst sample
    cos_mean: float
    top1: float  # fraction of samples with the same argmax
    top5: float  # fraction of samples whose reference top-1 is in the variant's top-5
    finite: bool


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(axis=1) / denom
    # Two all-zero rows agree perfectly; one zero row against a non-zero one does not.
    both_zero = (denom == 0) & (np.abs(a).sum(1) == 0) & (np.abs(b).sum(1) == 0)
    return np.where(both_zero, 1.0, np.nan_to_num(cos, nan=0.0))


def output_metrics(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """Max/mean absolute error, cosine similarity (min, mean), top-1 and top-5 agreement."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: reference {reference.shape} vs variant {candidate.shape}; check the model's output")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    finite = bool(np.isfinite(cand).all())
    diff = np.abs(np.nan_to_num(ref - cand, nan=np.inf))
    cos = cosine_per_sample(ref, cand) if finite else np.zeros(len(ref))
    flat_r, flat_c = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
    top1_ref = flat_r.argmax(axis=1)
    k = min(5, flat_c.shape[1])
    top5_cand = np.argsort(-flat_c, axis=1)[:, :k]
    return Metrics(
        samples=len(ref),
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        cos_min=float(cos.min()) if cos.size else 1.0,
        cos_mean=float(cos.mean()) if cos.size else 1.0,
        top1=float((flat_c.argmax(axis=1) == top1_ref).mean()),
        top5=float((top5_cand == top1_ref[:, None]).any(axis=1).mean()),
        finite=finite,
    )


def gate_failures(metrics: Metrics, gate: Gate, trained: bool) -> list[str]:
    """Why ``metrics`` fail ``gate`` (empty when they pass). Top-1 is checked only for trained weights."""
    failures = []
    if not metrics.finite:
        failures.append("non-finite outputs (NaN/inf)")
    if gate.max_abs is not None and not metrics.max_abs <= gate.max_abs:
        failures.append(f"max abs error {metrics.max_abs:.3g} > {gate.max_abs:g}")
    if gate.min_cosine is not None and not metrics.cos_min >= gate.min_cosine:
        failures.append(f"min cosine {metrics.cos_min:.6f} < {gate.min_cosine:g}")
    if trained and gate.min_top1 is not None and not metrics.top1 >= gate.min_top1:
        failures.append(f"top-1 agreement {metrics.top1:.1%} < {gate.min_top1:.0%}")
    return failures


def gate_text(gate: Gate, trained: bool) -> str:
    """Short human form of the criteria that are actually checked."""
    parts = []
    if gate.max_abs is not None:
        parts.append(f"max_abs<={gate.max_abs:g}")
    if gate.min_cosine is not None:
        parts.append(f"cos>={gate.min_cosine:g}")
    if trained and gate.min_top1 is not None:
        parts.append(f"top1>={gate.min_top1:.0%}")
    return ",".join(parts) or "none"


# ---------------------------------------------------------------- report


@dataclass
class ParityRow:
    """One variant's parity result."""

    variant: str
    precision: str
    runtime: str
    metrics: Metrics | None
    gate: Gate
    trained: bool
    passed: bool
    reason: str
    notes: str = ""

    def to_dict(self) -> dict:
        """JSON-ready form for the manifest: identity, verdict, gate, then the metrics (absent if it could not run)."""
        out = {
            "variant": self.variant,
            "precision": self.precision,
            "runtime": self.runtime,
            "passed": self.passed,
            "reason": self.reason,
            "gate": {k: v for k, v in asdict(self.gate).items() if v is not None and (self.trained or k != "min_top1")},
            **_json_metrics(self.metrics),
        }
        if self.notes:
            out["notes"] = self.notes
        return out


def _json_metrics(m: Metrics | None) -> dict:
    if m is None:
        return {}
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in asdict(m).items()}


@dataclass
class ParityReport:
    """Parity rows of all variants plus what they were measured on."""

    rows: list[ParityRow]
    reference: str = "pytorch-fp32"
    inputs: dict = field(default_factory=dict)
    trained: bool = False

    @property
    def passed(self) -> bool:
        """True when every variant passed its gate."""
        return all(r.passed for r in self.rows)

    def failures(self) -> list[ParityRow]:
        """Rows that failed their gate."""
        return [r for r in self.rows if not r.passed]

    def row(self, variant: str) -> ParityRow:
        """The row of ``variant`` (KeyError if absent)."""
        for r in self.rows:
            if r.variant == variant:
                return r
        raise KeyError(variant)

    def to_dict(self) -> dict:
        """JSON-ready form for the manifest's ``parity`` block."""
        return {
            "reference": self.reference,
            "inputs": self.inputs,
            "weights": "trained" if self.trained else "random (top-k agreement reported, not gated)",
            "passed": self.passed,
            "variants": [r.to_dict() for r in self.rows],
        }

    def format_table(self) -> str:
        """Plain-text table for humans (one row per variant, then the failures spelled out)."""
        head = ["variant", "precision", "runtime", "max_abs", "mean_abs", "cos_min", "cos_mean", "top1", "top5", "gate", "result"]
        lines = []
        for r in self.rows:
            m = r.metrics
            nums = (
                [f"{m.max_abs:.2e}", f"{m.mean_abs:.2e}", f"{m.cos_min:.6f}", f"{m.cos_mean:.6f}", f"{m.top1:.0%}", f"{m.top5:.0%}"]
                if m is not None
                else ["-"] * 6
            )
            lines.append([r.variant, r.precision, r.runtime, *nums, gate_text(r.gate, r.trained), "PASS" if r.passed else "FAIL"])
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        src = ", ".join(f"{v} {k}" for k, v in self.inputs.items() if k in ("photographs", "random")) or "given inputs"
        weights = "trained weights" if self.trained else "random weights: top-1/top-5 shown, not gated"
        out = [
            f"Parity vs {self.reference} on {src} ({weights})",
            fmt.format(*head).rstrip(),
            fmt.format(*("-" * w for w in widths)),
        ]
        out += [fmt.format(*line).rstrip() for line in lines]
        for r in self.rows:
            if not r.passed:
                out.append(f"FAIL {r.variant}: {r.reason}")
            if r.notes:
                out.append(f"note {r.variant}: {r.notes}")
        return "\n".join(out)


def compare_arrays(
    variant: str,
    precision: str,
    reference: np.ndarray,
    outputs: np.ndarray,
    *,
    runtime: str = "",
    spec: ModelSpec = DEFAULT_MODEL,
    trained: bool = False,
    notes: str = "",
) -> ParityRow:
    """Parity row of arbitrary outputs (e.g. a served model's) against reference outputs."""
    gate = spec.gates.get(precision, Gate())
    try:
        metrics = output_metrics(reference, outputs)
    except ParityError as exc:
        return ParityRow(variant, precision, runtime, None, gate, trained, False, str(exc), notes)
    failures = gate_failures(metrics, gate, trained)
    reason = "; ".join(failures) if failures else f"within {gate_text(gate, trained)}"
    return ParityRow(variant, precision, runtime, metrics, gate, trained, not failures, reason, notes)


# ---------------------------------------------------------------- running


@dataclass
class Variant:
    """A model variant to check: Triton model name, precision (gate key), and how to run it."""

    name: str
    precision: str
    runner: Any  # a Polygraphy runner, or a callable batch -> logits
    runtime: str = "onnxruntime"
    notes: str = ""  # e.g. "INT8 calibrated on synthetic data"


def run_outputs(runner, inputs: np.ndarray, spec: ModelSpec = DEFAULT_MODEL, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Outputs of one runner (Polygraphy runner or callable) over ``inputs``, through Polygraphy's Comparator."""
    comparator = lazy_import("polygraphy.comparator")
    logger = lazy_import("polygraphy.logger").G_LOGGER
    if not hasattr(runner, "infer"):
        fn = runner
        runner = callable_runner(lambda: fn, getattr(fn, "__name__", "callable"), spec)
    loader = [{spec.input_name: np.ascontiguousarray(inputs[i : i + batch_size])} for i in range(0, len(inputs), batch_size)]
    with logger.verbosity(logger.ERROR):
        results = comparator.Comparator.run([runner], data_loader=loader)
    iterations = results[runner.name]
    name = spec.output_name if spec.output_name in iterations[0] else next(iter(iterations[0]))
    return np.concatenate([np.array(it[name], dtype=np.float32) for it in iterations])


def check_parity(
    reference,
    variants: list[Variant],
    *,
    inputs: np.ndarray | None = None,
    inputs_info: dict | None = None,
    spec: ModelSpec = DEFAULT_MODEL,
    trained: bool = False,
    batch_size: int = DEFAULT_BATCH,
    reference_name: str = "pytorch-fp32",
) -> ParityReport:
    """Run every variant and the reference on the same inputs and gate each variant.

    ``reference`` is a runner, a callable, or precomputed reference logits for ``inputs``.
    ``inputs`` default to :func:`dnx.preprocess.probe_inputs`. A variant that cannot run fails its gate
    with the error as reason instead of aborting the others.
    """
    if inputs is None:
        inputs, inputs_info = probe_inputs(spec)
    inputs_info = inputs_info or {"total": len(inputs)}
    if isinstance(reference, np.ndarray):
        ref = reference
    else:
        ref = run_outputs(reference, inputs, spec, batch_size)
    rows = []
    for v in variants:
        try:
            out = run_outputs(v.runner, inputs, spec, batch_size)
        except Exception as exc:  # noqa: BLE001 - any runner failure is this variant's parity failure
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            gate = spec.gates.get(v.precision, Gate())
            rows.append(ParityRow(v.name, v.precision, v.runtime, None, gate, trained, False, f"could not run: {msg}", v.notes))
            continue
        rows.append(compare_arrays(v.name, v.precision, ref, out, runtime=v.runtime, spec=spec, trained=trained, notes=v.notes))
    return ParityReport(rows=rows, reference=reference_name, inputs=inputs_info, trained=trained)
