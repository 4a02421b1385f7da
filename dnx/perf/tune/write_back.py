"""Writing ``dnx tune``'s winners into the repository, all of them or none.

What is guaranteed (docs/RELIABILITY.md):

* The manifest is read and every winner rendered before any file changes, so a corrupt
  manifest or a config the template cannot express stops the run with the repository as it was.
* SIGINT/SIGTERM are held while files change: the write-back finishes, then the signal ends the
  run (128 + signal) with every config and the manifest written.
* A failed write (full disk, permissions; ``DNX_FAULT=tune-write-back:...:error``) restores every
  config already rewritten to its previous bytes and removes the ``config.pbtxt.orig`` files this
  run created; the manifest, written atomically last, is then still the previous one. The
  repository is as before and :class:`~dnx.errors.DnxError` says so.
* Not covered: SIGKILL or a power loss between two configs leaves the configs rewritten so far
  new and the manifest old; each rewritten model's ``config.pbtxt.orig`` holds its previous config.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import signal
import threading
from pathlib import Path

from dnx import faults
from dnx.errors import DnxError, one_line
from dnx.hashing import sha256_file
from dnx.manifest import CONFIG_FILES
from dnx.model_repository.config_edit import ORIG_NAME, write_config
from dnx.model_repository.layout import MANIFEST_NAME, atomic_write_bytes, atomic_write_text
from dnx.model_repository.render import TritonConfig, render_config
from dnx.perf.served import repository_manifest_json
from dnx.perf.tune import space
from dnx.perf.tune.decision import choices, decide, unsearched_why
from dnx.perf.tune.options import SLO, TuneResult
from dnx.perf.tune.slo import apply_rounds

_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM while the repository is written, so it is never half-written.

    The signals are recorded by a handler and raised again once the block is done (a signal mask
    would not do: a process-directed signal goes to any thread that does not block it, the
    gRPC client's for one, and Python then runs its handler in the main thread at once).
    Outside the main thread Python cannot install handlers; the block then runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in _DEFERRED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])  # now the previous handler acts on it


def _manifest(result: TuneResult, manifest: dict, written: dict[str, TritonConfig], repo: Path) -> dict:
    """The manifest with the written configs (in ``repo`` by now), each model's tuned figure and the ``tuning`` record."""
    o = result.options
    ensemble = manifest.get("ensemble") or {}
    for name, cfg in written.items():
        if name == ensemble.get("preprocess"):  # the ensemble's step, not a variant: its record is the ensemble's
            ensemble.update(preprocess_instances=cfg.instance_count, preprocess_queue_delay_us=cfg.max_queue_delay_us)
            # The file as written, hashed as `dnx export` records the ensemble's files (ensemble.py).
            ensemble.setdefault("files", {}).update(_written_files(repo, name, prefix=f"{name}/"))
            continue
        entry = manifest.setdefault("models", {}).setdefault(name, {})
        # What tune wrote is recorded like what export wrote, so `dnx publish` still verifies it.
        entry.setdefault(CONFIG_FILES, {}).update(_written_files(repo, name))
        entry["config"] = {"max_batch_size": cfg.max_batch_size, "instance_count": cfg.instance_count,
                           "instance_kind": cfg.instance_kind, "preferred_batch_sizes": cfg.preferred_batch_sizes,
                           "max_queue_delay_us": cfg.max_queue_delay_us, "parameters": cfg.parameters}
    measured = _measured(result)
    for name, d in result.decisions.items():
        if name not in measured:  # a failed measurement of the current config never replaces a previous record
            continue
        # What the served config measured here: `dnx export` serves the fastest variant in the ensemble.
        record = {**(d.point or {}), "objective": o.objective, "load": str(o.load), "confirmed": bool(d.confirmed)}
        if d.point and name in manifest.get("models", {}):
            manifest["models"][name]["tune"] = record
        elif d.point and name == ensemble.get("preprocess"):  # measured through the ensemble: its figure
            ensemble["tune"] = record
    manifest["tuning"] = {
        "tuned_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": result.machine, "versions": result.versions, "objective": o.objective,
        "latency_budget_ms": o.latency_budget_ms, "p99_ms": o.p99_ms, "budget_minutes": o.budget_minutes, "concurrency": list(o.levels),
        "load": str(o.load),
        "report": str(result.out_dir),
        # The previous run's record of a model whose current config this run could not measure stays.
        "models": {**((manifest.get("tuning") or {}).get("models") or {}),
                   **{n: d.manifest_record() for n, d in result.decisions.items() if n in measured}},
    }
    return manifest


def _measured(result: TuneResult) -> set[str]:
    """The models whose current config (the baseline candidate) this run measured without failing."""
    return {c.model for c in result.candidates if c.baseline and c.status == "ok"}


def _written_files(repo: Path, name: str, prefix: str = "") -> dict[str, str]:
    """sha256 of the ``config.pbtxt`` tune wrote for ``name`` and of the ``config.pbtxt.orig`` it kept."""
    return {prefix + rel: sha256_file(repo / name / rel) for rel in ("config.pbtxt", ORIG_NAME)
            if (repo / name / rel).is_file()}


def _restore(repo: Path, previous: dict[str, tuple[bytes | None, bool]]) -> bool:
    """Put back the configs of ``previous`` (``{model: (config bytes, had an .orig)}``); False if one could not be."""
    ok = True
    for name, (old, had_orig) in previous.items():
        config, orig = repo / name / "config.pbtxt", repo / name / ORIG_NAME
        try:
            if old is not None and (not config.is_file() or config.read_bytes() != old):
                atomic_write_bytes(config, old)
            if not had_orig and orig.exists():  # an unlink of nothing still fails on a read-only file system
                orig.unlink()
        except OSError:
            ok = False
    return ok


def decisions_of(result: TuneResult, confirmed: bool = True) -> dict:
    """Each model's :class:`~dnx.perf.tune.decision.Decision` from ``result``'s candidates and final round
    (the closed-loop rerun, or the open-loop round of ``--objective slo``); ``confirmed`` False: the final
    round is not used (an interrupted run)."""
    o = result.options
    chosen = choices(result.candidates, o.rank_objective, o.load, o.search_budget_ms)
    decisions = decide(result.candidates, chosen, result.confirmations if confirmed else {}, result.confirm_errors,
                       searched=result.searched, unsearched_why=unsearched_why(result))
    if o.objective == SLO:
        return apply_rounds(result, decisions, result.slo if confirmed else {})
    return decisions


def write_back(result: TuneResult, bases: dict[str, TritonConfig], repo: Path) -> None:
    """Decide each model's winner and write the confirmed winners into ``repo``.

    Fills ``result.decisions`` from ``result.candidates`` and ``result.confirmations`` (a winner
    without a confirmation that held is not written; ``written`` set for each rewritten config).
    All or nothing on a failed write: see the module's docstring for what is guaranteed.
    """
    result.decisions = decisions_of(result)
    # Read and render first: a corrupt manifest or a bad config stops the run before any file changes.
    manifest = repository_manifest_json(repo) or {"models": {}}
    winners = {n: space.apply_knobs(bases[n], d.knobs) for n, d in result.decisions.items() if d.write}
    if not winners and not _measured(result):
        return  # no current config was measured: the manifest keeps its previous records untouched
    for cfg in winners.values():
        render_config(cfg)
    previous: dict[str, tuple[bytes | None, bool]] = {}
    with signals_deferred():
        try:
            for name, cfg in winners.items():
                path = repo / name / "config.pbtxt"
                previous[name] = (path.read_bytes() if path.is_file() else None, (repo / name / ORIG_NAME).exists())
                write_config(repo / name, cfg)
                result.decisions[name].written = str(path)
                if len(previous) == 1:
                    faults.point("tune-write-back:after-first-config")
            text = json.dumps(_manifest(result, manifest, winners, repo), indent=2) + "\n"
            faults.point("tune-write-back:before-manifest")
            atomic_write_text(repo / MANIFEST_NAME, text)
        except OSError as exc:
            state = (f"{repo} is unchanged (every config was put back)" if _restore(repo, previous)
                     else f"some configs in {repo} could not be put back (see {ORIG_NAME})")
            for d in result.decisions.values():
                d.written = None
            raise DnxError(f"writing the tuned configs failed ({one_line(exc)}); {state}; free space or fix "
                           "permissions and rerun `dnx tune`") from None
        except BaseException:
            _restore(repo, previous)
            raise
