"""The stage engine: a stage is data (:class:`Stage`), its outcome is data (:class:`StageResult`),
and :func:`run_stage` is the one place an exception becomes a FAILED line.

Every stage, the repository write included, runs through :func:`run_stage`: a user error
(:class:`~dnx.errors.InputError`) stops the run with its own message; anything else (ONNX Runtime,
OpenVINO, torch, a full disk) becomes the stage's one-line reason.
"""

from __future__ import annotations

import errno
import shutil
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np

from dnx import faults
from dnx.errors import DnxError, InputError, one_line
from dnx.manifest import Manifest
from dnx.model_repository.layout import tree_bytes
from dnx.parity import ParityReport
from dnx.pipeline.entries import ModelEntry
from dnx.pipeline.options import ExportOptions
from dnx.spec import ModelSpec


class Status(str, Enum):
    OK = "OK"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass
class StageResult:
    """What one stage did: status, a reason when not OK, and measured figures."""

    name: str
    status: Status
    reason: str = ""
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status.value, "reason": self.reason,
                "figures": self.figures, "seconds": round(self.seconds, 3)}


@dataclass
class Context:
    """State handed from stage to stage."""

    options: ExportOptions
    spec: ModelSpec
    work: Path
    target: str = "cpu"
    runtimes: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    staging: Path | None = None  # the folder the repository is written into before the swap
    target_reason: str = ""
    model: object = None
    weights: object = None
    onnx_files: dict[str, Path] = field(default_factory=dict)  # precision -> ONNX graph
    onnx_info: dict[str, dict] = field(default_factory=dict)  # precision -> converter info
    inputs: np.ndarray | None = None  # parity inputs: photographs + seeded random tensors
    inputs_info: dict = field(default_factory=dict)
    reference: np.ndarray | None = None  # PyTorch FP32 logits of ``inputs``
    models: list[ModelEntry] = field(default_factory=list)
    parity: ParityReport | None = None
    results: list[StageResult] = field(default_factory=list)
    manifest: Manifest = field(default_factory=Manifest)
    previous_bytes: int = 0  # size of the repository this run replaces (for disk-space estimates)


def work_space(ctx: Context) -> tuple[Path, int, str]:
    """Where a stage writes and the bytes it needs: the previous repository's size, else one FP32 graph per model."""
    if ctx.previous_bytes:
        return ctx.work, ctx.previous_bytes, f"measured from the previous repository {ctx.options.out}"
    params = sum(p.numel() for p in ctx.model.parameters()) if hasattr(ctx.model, "parameters") else 0
    models = max(1, len(ctx.precisions)) * max(1, len(ctx.runtimes))
    if params:
        return ctx.work, params * 4 * models, (f"{params / 1e6:.1f} M FP32 weights of {ctx.spec.name}, up to one "
                                               f"graph for each of {models} precision x runtime models")
    return ctx.work, tree_bytes(ctx.work), "at least what it had built so far"


@dataclass(frozen=True)
class Stage:
    """A pipeline step: ``run(ctx)`` is called when ``when(ctx)`` holds, else ``why_not(ctx)`` says why not.

    ``required``: a failure ends the run. A stage that is not required (the parity gate) is a
    gate ``--keep-failing`` may carry on past. ``space(ctx)`` says where the stage writes and how
    much it needs, for the line of a full disk. ``skip_note`` is added when it does not run
    because an earlier stage failed.
    """

    name: str
    run: Callable[[Context], StageResult]
    when: Callable[[Context], bool] = lambda ctx: True
    why_not: Callable[[Context], str] = lambda ctx: "not needed"
    required: bool = True
    space: Callable[[Context], tuple[Path, int, str]] = work_space
    skip_note: str = ""

    def stops(self, result: StageResult, options: ExportOptions) -> bool:
        """True when ``result`` ends the run: a failure of a required stage, or of a gate without --keep-failing."""
        return result.status is Status.FAILED and (self.required or not options.keep_failing)


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC, also when a library only says so in its message."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc)


def disk_full_reason(exc: BaseException, where: Path, needed: int, basis: str) -> str:
    """The one-line reason for a full disk: which path, how much the run needs, how to fix it."""
    path = getattr(exc, "filename", None) or where
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    have = f", {free / 2**20:.0f} MiB free there" if free is not None else ""
    need = f"this run needs about {needed / 2**20:.0f} MiB ({basis}){have}" if needed else f"no estimate of the space needed{have}"
    return f"no space left on device writing {path}: {need}; free some space, or point --out / TMPDIR at a larger disk"


def failure_reason(exc: BaseException) -> str:
    """``Type: first line of the message`` (dnx's own errors without the type), at most 300 characters."""
    text = one_line(exc, 300)
    if isinstance(exc, DnxError) or text == exc.__class__.__name__:
        return text
    return f"{exc.__class__.__name__}: {text}"[:300]


def run_stage(stage: Stage, ctx: Context) -> StageResult:
    """Run one stage; any exception but a user error (:class:`InputError`) becomes its FAILED line."""
    t0 = time.perf_counter()
    try:
        faults.point(f"export-stage:{stage.name}")
        result = stage.run(ctx)
    except InputError:
        raise  # a user error stops the run with its own one-line message
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime, OpenVINO, torch, disk: one FAILED line each
        reason = disk_full_reason(exc, *stage.space(ctx)) if is_disk_full(exc) else failure_reason(exc)
        result = StageResult(stage.name, Status.FAILED, reason)
    result.seconds = time.perf_counter() - t0
    return result


def skip_rest(stages: list[Stage], failed: str, report: Callable[[StageResult], None]) -> None:
    """Record ``stages`` (those after a failed one) as SKIPPED, each saying which stage failed."""
    for stage in stages:
        report(StageResult(stage.name, Status.SKIPPED, f"not run: {failed} failed{stage.skip_note}"))
