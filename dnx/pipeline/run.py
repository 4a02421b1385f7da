"""``export(options)``: the stages in order inside a staging folder beside ``--out``, swapped in
only when every stage that ran succeeded, under the repository folder's lock."""

from __future__ import annotations

import errno
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dnx import signals
from dnx.locks import repository_lock
from dnx.manifest import Manifest, write_manifest
from dnx.model_repository.layout import StagedRepository, remove_orphans, tree_bytes
from dnx.parity import ParityReport
from dnx.pipeline import stages
from dnx.pipeline.engine import Context, Stage, StageResult, Status, disk_full_reason, run_stage, skip_rest
from dnx.pipeline.options import ExportOptions, default_precisions, default_runtimes, resolve_target
from dnx.pipeline.write import WRITE
from dnx.preflight import preflight
from dnx.signals import Interrupted
from dnx.spec import ModelSpec, get_spec
from dnx.workdirs import remove_stale, work_dir

LOCK_COMMAND = "dnx export"


@dataclass
class ExportResult:
    """What ``export`` returns to the CLI."""

    repository: Path | None
    stages: list[StageResult]
    manifest: Manifest
    committed: bool
    parity: ParityReport | None = None
    failed_gate: bool = False  # the run stopped at a gate (not a required stage): --keep-failing would go on


def export(options: ExportOptions, on_stage: Callable[[StageResult], None] | None = None,
           on_warning: Callable[[str], None] | None = None, *, wait: bool = False,
           on_wait: Callable[[str], None] | None = None) -> ExportResult:
    """Build a Triton model repository at ``options.out``.

    The repository is assembled in a staging folder beside ``options.out`` and swapped in only
    when no stage failed (``keep_failing`` lets parity-failing models through); otherwise the
    previous repository is left untouched. ``on_stage`` is called after each stage, also for
    the chosen target (first) and for stages that did not run (SKIPPED, with why). The work
    folder in the system temp folder is removed on every way out; ones left by killed runs
    are removed here.

    The run holds ``options.out``'s lock (:mod:`dnx.locks`) from the first write to the swap:
    while another dnx process holds it this raises :class:`~dnx.errors.RepositoryBusyError`
    naming it, or with ``wait`` queues behind it (``on_wait`` is told once).
    """
    # Left by killed runs: removed whatever this run does next (a live run's folders name a live
    # owner and are kept, so this needs no lock).
    remove_stale(tempfile.gettempdir(), "dnx-work")
    if Path(options.out).resolve().parent.is_dir():
        remove_orphans(Path(options.out))
    # Fail fast: every check that needs no exported model, before torch loads.
    for warning in preflight(options):
        if on_warning:
            on_warning(warning)
    spec = get_spec(options.model)
    target, target_reason = resolve_target(options.target)
    with repository_lock(options.out, LOCK_COMMAND, wait=wait, on_wait=on_wait):
        try:
            return _export(options, spec, target, target_reason, on_stage)
        except Interrupted as exc:
            raise exc.with_detail(f"{options.out} left unchanged, temporary folders removed") from None


def _export(options: ExportOptions, spec: ModelSpec, target: str, target_reason: str, on_stage) -> ExportResult:
    def report(result: StageResult) -> None:
        ctx.results.append(result)
        if on_stage:
            on_stage(result)

    def failed(gate: bool = False) -> ExportResult:
        return ExportResult(None, ctx.results, ctx.manifest, committed=False, failed_gate=gate)

    steps: list[Stage] = [*stages.STAGES, WRITE]
    with StagedRepository(options.out) as staged, work_dir("dnx-work") as work:
        ctx = Context(options=options, spec=spec, work=work, target=target, staging=staged.path,
                      target_reason=target_reason)
        ctx.previous_bytes = tree_bytes(Path(options.out))
        ctx.precisions = tuple(dict.fromkeys(options.precisions or default_precisions(target)))
        ctx.runtimes = tuple(dict.fromkeys(options.runtimes or default_runtimes(target)))
        if options.target == "auto":  # say what auto chose, and why
            report(StageResult("target", Status.OK, f"{target} ({target_reason})", {"target": target}))
        # Fail before minutes of work when the disk cannot even hold a repository like the last one.
        need = ctx.previous_bytes
        for where in {staged.path.parent, work.parent}:
            if need and shutil.disk_usage(where).free < need:
                reason = disk_full_reason(OSError(errno.ENOSPC, "full"), where, need,
                                          f"measured from the previous repository {options.out}")
                report(StageResult("disk_space", Status.FAILED, reason))
                skip_rest(steps, "disk_space", report)
                return failed()
        for i, stage in enumerate(steps):
            signals.check()  # a signal whose exception a library swallowed stops the run here
            if not stage.when(ctx):
                report(StageResult(stage.name, Status.SKIPPED, stage.why_not(ctx)))
                continue
            result = run_stage(stage, ctx)
            report(result)
            if stage.stops(result, options):
                skip_rest(steps[i + 1:], stage.name, report)
                return failed(gate=not stage.required)
        ctx.manifest.stages = [r.to_dict() for r in ctx.results]
        write_manifest(staged.path, ctx.manifest)
        signals.check()  # never swap the repository in after a signal
        repo = staged.commit()
    return ExportResult(repo, ctx.results, ctx.manifest, committed=True, parity=ctx.parity)
