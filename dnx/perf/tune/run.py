"""``dnx tune`` against a real tritonserver: measure candidates, pick winners, write them back.

The repository is locked (:func:`dnx.locks.repository_lock`: exclusively, shared for
``--dry-run``) for the whole run, and only written at the end, when the search finished
(``--dry-run`` never). Each model's winner is chosen by :func:`~dnx.perf.tune.objective.choose`
(the load-aware objective by default, docs/TUNING.md), then measured again back to
back with the current config, interleaved at every level (the confirm step); a winner that
holds there is rendered through the same template, the first previous ``config.pbtxt`` kept as
``config.pbtxt.orig``, and ``dnx-manifest.json`` records the machine, versions, objective and
the rerun's figures (:mod:`.write_back`). Interrupted (Ctrl-C, SIGTERM),
the repository is unchanged, the models of a ``--url`` server are reloaded from it, a launched
server is stopped, the report keeps what was measured, and :class:`~dnx.signals.Interrupted`
ends the command with 128 + signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import numpy as np

from dnx.errors import DnxError, InputError, disk_full, one_line
from dnx.locks import repository_lock
from dnx.manifest import library_versions
from dnx.model_repository.config_edit import read_config, repository_config_json
from dnx.perf.results import machine_info, new_results_dir
from dnx.perf.served import (ModelControl, default_metrics_url, inspect_server, launched_server, measurable,
                            repository_manifest)
from dnx.perf.tune import space
from dnx.perf.tune.decision import choices
from dnx.perf.tune.measure import Measurer, confirm_winners, search
from dnx.perf.tune.options import SLO, TuneOptions, TuneResult
from dnx.perf.tune.report import write_tune_report
from dnx.perf.tune.slo import slo_final_round
from dnx.perf.tune.write_back import decisions_of, write_back
from dnx.preprocess import photo_batch
from dnx.signals import Interrupted, terminating
from dnx.spec import spec_from_manifest


def _check_writable(repo: Path, names: list[str]) -> None:
    for target in [repo] + [repo / n for n in names]:
        if not os.access(target, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {target}: no write permission; fix the permissions or pass --dry-run")
        cfg = target / "config.pbtxt"
        if target != repo and cfg.exists() and not os.access(cfg, os.W_OK):
            raise InputError(f"cannot write {cfg}: no write permission; fix the permissions or pass --dry-run")


def _tunable(repo: Path, name: str):
    """The config of ``name`` in ``repo`` when dnx can tune it (dnx-rendered, a known backend), else None."""
    if not (repo / name / "config.pbtxt").is_file():
        return None
    with contextlib.suppress(InputError):
        cfg = read_config(repo / name)
        space.backend_of(cfg)
        return cfg
    return None


def _ensembles_of(repo: Path, ensemble: dict, bases: dict) -> dict[str, str]:
    """``{preprocess model: its ensemble}`` for the named preprocess models: they are measured through it."""
    through = {}
    for name, cfg in bases.items():
        if space.is_preprocess(cfg):
            if ensemble.get("preprocess") != name or not ensemble.get("name"):
                raise InputError(f"{name} is a preprocess model, tuned through its ensemble, but {repo}'s manifest names "
                                 "no ensemble over it; re-export the repository with `dnx export`")
            through[name] = ensemble["name"]
    return through


def _disk_full_line(result: TuneResult, repo: Path, exc: OSError) -> str:
    """The one line for a results disk that filled while measuring: the repository is untouched."""
    measured = sum(1 for c in result.candidates if c.status == "ok")
    return (f"no space left on the device of {result.out_dir} ({one_line(exc)}); {repo} and its manifest are unchanged "
            f"(nothing is written back from an unfinished search); {measured} candidates were measured, their "
            f"perf_analyzer logs are in {result.out_dir / 'raw'}; free space (or pass --out on another disk) and "
            "rerun `dnx tune`")


def run_tune(opts: TuneOptions) -> TuneResult:
    """Tune the served models of ``opts.repository`` and (unless ``dry_run``) write the winners back.

    Holds the repository's lock throughout: another dnx writing it makes this fail at once
    (:class:`~dnx.errors.RepositoryBusyError`), or wait with ``opts.wait``.
    """
    opts.check()
    repo = Path(opts.repository)
    if not opts.dry_run and repo.is_dir():
        _check_writable(repo, [])  # before the lock file beside it, which a read-only file system refuses too
    with repository_lock(repo, "dnx tune", shared=opts.dry_run, wait=opts.wait):
        return _run(opts, repo, time.monotonic())


def _run(opts: TuneOptions, repo: Path, t_start: float) -> TuneResult:
    manifest = repository_manifest(repo)
    ensemble = (manifest.ensemble if manifest is not None else None) or {}
    for name in opts.models or []:
        if not (repo / name / "config.pbtxt").is_file():
            known = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
            raise InputError(f"model {name!r} is not in {repo}; choose from: {', '.join(known) or '(none)'}")
        if name == ensemble.get("name"):
            raise InputError(f"{name} is an ensemble (its steps are tuned, not it): pass --models "
                             f"{ensemble.get('preprocess')} to tune its preprocessing through it, or --models "
                             f"{ensemble.get('variant')} for its variant")
    bases = {n: read_config(repo / n) for n in opts.models or []}
    for cfg in bases.values():
        space.backend_of(cfg)
    through = _ensembles_of(repo, ensemble, bases)
    if not opts.dry_run:
        _check_writable(repo, list(opts.models or []))
    out = Path(opts.out) if opts.out else new_results_dir("tune")
    out.mkdir(parents=True, exist_ok=True)
    result = TuneResult(out, opts, machine=machine_info(), versions=library_versions(), through=through)
    image = np.ascontiguousarray(photo_batch(spec_from_manifest(manifest or {}))[:1])
    stopped: Interrupted | None = None
    full: OSError | None = None
    with contextlib.ExitStack() as stack:
        # SIGINT/SIGTERM (once or more): stop measuring, stop the server, report what was measured.
        stack.enter_context(terminating())
        try:
            if opts.url is None:
                # A preprocess model is measured through its ensemble: the server loads that too (and its steps).
                load = list(dict.fromkeys([*opts.models, *through.values()])) if opts.models else None
                server = stack.enter_context(launched_server(repo, load, out / "tritonserver.log"))
                url, metrics_url = server.grpc_url, server.metrics_url
            else:
                url, metrics_url = opts.url, default_metrics_url(opts.url)
            result.url = url
            served, _ = measurable(inspect_server(url, "grpc", opts.models), named=bool(opts.models))
            for m in served:
                if m.name not in bases and (cfg := _tunable(repo, m.name)) is not None:
                    bases[m.name] = cfg
            names = [m.name for m in served if m.name in bases]
            if not names:
                raise InputError(f"no served model of {repo} can be tuned (dnx-rendered onnxruntime/openvino/"
                                 "tensorrt_plan configs); pass --models")
            if not opts.dry_run:
                _check_writable(repo, names)
            measurer = Measurer(url, opts, out, t_start + opts.budget_minutes * 60, through=through,
                                metrics_url=metrics_url)
            stack.callback(measurer.close)
            if opts.url is not None:  # leave a shared server as the repository says, whatever happens
                stack.callback(measurer.control.restore, repo, names)
            search(result, measurer, bases, names, image)
            result.budget_stopped = measurer.budget_stops > 0
            chosen = choices(result.candidates, opts.rank_objective, opts.load, opts.search_budget_ms)
            if opts.objective == SLO:
                slo_final_round(result, measurer, bases, chosen)
            else:
                confirm_winners(result, measurer, bases, chosen)
        except KeyboardInterrupt as exc:
            result.interrupted = True
            stopped = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        except OSError as exc:  # the results disk filled: stop as if interrupted, write nothing back
            if not disk_full(exc):
                raise
            result.interrupted, full = True, exc
    if full is not None:
        raise DnxError(_disk_full_line(result, repo, full)) from None
    if result.interrupted or opts.dry_run:
        result.decisions = decisions_of(result, confirmed=not result.interrupted)
        for d in result.decisions.values():  # nothing is written: say what would have been
            if d.write:
                why = d.slo["reason"] if d.slo else d.confirmation.reason
                d.write, d.reason = False, f"dry run; it would be written: {why}"
    else:
        with terminating():  # a signal deferred during the write-back arrives once it is complete
            try:
                write_back(result, bases, repo)
            except Interrupted as exc:  # the repository is written in full: nothing to add
                stopped = exc
        written = [n for n, d in result.decisions.items() if d.written]
        if opts.url is not None and written:  # the running server picks up the new configs now
            with contextlib.suppress(Exception), ModelControl(opts.url) as control:
                for n in written:
                    control.load(n, repository_config_json(repo / n))
    try:
        result.paths = write_tune_report(result)
    except OSError as exc:
        if not disk_full(exc):
            raise
        written = [n for n, d in (result.decisions or {}).items() if d.written]
        done = (f"the tuned configs of {', '.join(written)} and the manifest are written" if written
                else f"{repo} is unchanged")
        raise DnxError(f"no space left on the device of {result.out_dir} ({one_line(exc)}): the tune report could "
                       f"not be written; {done}; free space (or pass --out on another disk) before the next run") from None
    if result.interrupted:
        raise stopped.with_detail(f"{repo} is unchanged; the {len(result.candidates)} candidates measured are in "
                                  f"{result.paths['md']}; rerun `dnx tune` to finish") from None
    if stopped is not None:
        raise stopped
    return result
