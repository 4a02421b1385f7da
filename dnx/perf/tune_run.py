"""``dnx tune`` against a real tritonserver: measure candidates, pick winners, write them back.

Each candidate config is loaded into the *running* server with Triton's model-control API
(``load_model(name, config=json)``, the server runs with ``--model-control-mode explicit``),
checked to answer like the untuned model (one photograph, cosine >= 0.999), and measured with
perf_analyzer, one concurrency level per run, short windows with the stability check kept.
The search itself is :mod:`dnx.perf.tune`.

The repository is only written at the end, when the search finished (``--dry-run`` never):
each winner that beats the previous config by :data:`~dnx.perf.tune.MIN_GAIN` is rendered
through the same template, the first previous ``config.pbtxt`` kept as ``config.pbtxt.orig``,
and ``dnx-manifest.json`` records the machine, versions, objective and figures. Interrupted
(Ctrl-C, SIGTERM), the repository is unchanged, the models of a ``--url`` server are reloaded
from it, a launched server is stopped, and the report keeps what was measured.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnx._lazy import lazy_import
from dnx.errors import DnxError, InputError, ServerError
from dnx import faults
from dnx.model_repository.layout import MANIFEST_NAME, atomic_write_text
from dnx.perf import tune as space
from dnx.perf.sweep import RELAXED_STABILITY, STABILITY_EXIT_CODE, ConcurrencyRange, build_argv, parse_csv

DEFAULT_BUDGET_MINUTES = 14.0  # two variants + baselines of the 4-5 model CPU repository, 2 cores: <= 15 min
LOAD_ESTIMATE_S = 8.0  # load_model with an OpenVINO compile and warm-up, before anything was measured


class TuneInterrupted(DnxError):
    """Ctrl-C or SIGTERM during ``dnx tune``."""


@dataclass
class TuneOptions:
    """What ``dnx tune`` searches and how it measures."""

    repository: Path = Path("model_repository")
    models: list[str] | None = None  # None: baseline every served model, tune the `top` best
    objective: str = "throughput"
    latency_budget_ms: float | None = None
    budget_minutes: float = DEFAULT_BUDGET_MINUTES
    url: str | None = None  # None: launch a local server on the repository
    dry_run: bool = False
    top: int = 2
    concurrency: tuple[int, ...] = (1, 2, 4)
    max_concurrency: int = 32  # cap of the fill level added per candidate (space.levels_for)
    window_ms: int = 1500
    max_trials: int = 6
    stability_percentage: float = 15.0
    cores: int | None = None  # search space sized for this many cores (default: this machine's)
    out: Path | None = None
    progress: bool = True

    def check(self) -> None:
        """Raise :class:`InputError` for values that cannot work."""
        if self.objective not in space.OBJECTIVES:
            raise InputError(f"--objective {self.objective!r} is unknown; choose {' or '.join(space.OBJECTIVES)}")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise InputError(f"--latency-budget-ms {self.latency_budget_ms:g} must be > 0, e.g. 50")
        if self.top < 1:
            raise InputError("--top must be >= 1")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise InputError(f"--concurrency {list(self.concurrency)} must list levels >= 1, e.g. 1,2,4")
        if self.max_concurrency < max(self.concurrency):
            raise InputError(f"--max-concurrency {self.max_concurrency} is below --concurrency's highest level "
                             f"{max(self.concurrency)}; raise it (default 32)")
        if not Path(self.repository).is_dir():
            raise InputError(f"model repository {self.repository} does not exist; build it with `dnx export` or pass --repository")
        need = candidate_estimate_s(self)
        if self.budget_minutes * 60 < need:
            raise InputError(f"--budget-minutes {self.budget_minutes:g} is too small to measure one candidate "
                             f"(about {need:.0f} s here); give at least {need / 60:.1f}")

    @property
    def levels(self) -> tuple[int, ...]:
        """Concurrency levels measured per candidate (c1 only for the latency objective)."""
        return (1,) if self.objective == "latency" else tuple(sorted(set(self.concurrency)))


def candidate_estimate_s(opts: TuneOptions) -> float:
    """A first guess of one candidate's cost: a load plus at least 3 windows per level (and a fill level)."""
    return LOAD_ESTIMATE_S + (len(opts.levels) + 1) * (3 * opts.window_ms / 1000.0 + 2.0)


@dataclass
class Candidate:
    """One measured (or failed) config of one model."""

    model: str
    index: int
    knobs: dict
    label: str
    status: str = "ok"  # ok | failed
    error: str = ""
    points: list[dict] = field(default_factory=list)  # concurrency, throughput, p99_ms, p50_ms, stable
    score: float | None = None
    load_s: float = 0.0
    seconds: float = 0.0
    baseline: bool = False
    winner: bool = False

    def at_score(self, objective: str, budget: float | None) -> dict | None:
        """The point that gave the score (c1 for latency)."""
        if self.score is None:
            return None
        if objective == "latency":
            return next(p for p in self.points if p["concurrency"] == 1)
        fits = [p for p in self.points if budget is None or p["p99_ms"] <= budget]
        return max(fits, key=lambda p: p["throughput"])


@dataclass
class TuneResult:
    """Every candidate, the decision per model, the report paths."""

    out_dir: Path
    options: TuneOptions
    candidates: list[Candidate] = field(default_factory=list)
    decisions: dict[str, dict] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    interrupted: bool = False
    url: str = ""


# ------------------------------------------------------------------ signals


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM while the repository is written, so it is never half-written; deliver them after.

    Python handlers, not a signal mask: a mask holds only the main thread, and a signal sent to the
    process then reaches one of the other threads (gRPC's, tqdm's), after which Python runs the
    handler in the main thread all the same.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


# ------------------------------------------------------------------ measuring


class _Measurer:
    """Loads candidates into the server and measures them with perf_analyzer."""

    def __init__(self, url: str, opts: TuneOptions, raw: Path, deadline: float):
        from dnx.perf.sweep import find_perf_analyzer, perf_analyzer_env

        self.url, self.opts, self.raw, self.deadline = url, opts, raw, deadline
        self.client = lazy_import("tritonclient.grpc").InferenceServerClient(url=url)
        self.error_type = lazy_import("tritonclient.utils").InferenceServerException
        self.binary, self.env = find_perf_analyzer(), perf_analyzer_env()
        self.costs: list[float] = []
        self.reference: dict[str, np.ndarray] = {}
        self.commands: list[str] = []
        raw.mkdir(parents=True, exist_ok=True)

    def estimate_s(self) -> float:
        return max(self.costs) if self.costs else candidate_estimate_s(self.opts)

    def check_budget(self) -> None:
        if time.monotonic() + self.estimate_s() > self.deadline:
            raise space.BudgetExhausted()

    def load(self, name: str, config_json: str) -> None:
        try:
            self.client.load_model(name, config=config_json)
        except self.error_type as exc:
            msg = (str(exc).splitlines() or [""])[0]
            if "explicit" in msg.lower() or "not allowed" in msg.lower():
                raise ServerError(f"the server at {self.url} refuses load_model ({msg}); run it with "
                                  "--model-control-mode explicit (as `dnx serve` does) or use --launch") from None
            raise

    def answer(self, cfg, image: np.ndarray) -> np.ndarray:
        grpc = lazy_import("tritonclient.grpc")
        inp = grpc.InferInput(cfg.input_name, list(image.shape), "FP32")
        inp.set_data_from_numpy(image)
        return self.client.infer(cfg.name, [inp]).as_numpy(cfg.output_name)

    def level(self, model: str, idx: int, c: int) -> dict:
        """One perf_analyzer run at concurrency ``c``; relaxed once if it never stabilises."""
        for relaxed in (False, True):
            stem = f"{model}_cand{idx}_c{c}" + ("_relaxed" if relaxed else "")
            csv_path = self.raw / f"{stem}.csv"
            argv = build_argv(self.binary, model, url=self.url, protocol="grpc", batch_size=1,
                              concurrency=ConcurrencyRange(c, c, 1), measurement_interval_ms=self.opts.window_ms,
                              csv_path=csv_path, max_trials=self.opts.max_trials,
                              stability_percentage=RELAXED_STABILITY if relaxed else self.opts.stability_percentage)
            self.commands.append(" ".join(argv))
            timeout = self.opts.window_ms / 1000.0 * (self.opts.max_trials + 2) * 3 + 60
            try:
                proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"perf_analyzer did not finish within {timeout:.0f} s at concurrency {c}") from None
            (self.raw / f"{stem}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode == 0 and csv_path.is_file():
                rows = parse_csv(csv_path)
                if rows:
                    m = rows[0]
                    return {"concurrency": c, "throughput": m.throughput, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                            "stable": not relaxed}
            if proc.returncode != STABILITY_EXIT_CODE:
                tail = " | ".join(ln.strip() for ln in (proc.stdout + proc.stderr).strip().splitlines()[-2:])
                raise RuntimeError(f"perf_analyzer failed at concurrency {c} (exit {proc.returncode}): {tail}")
        raise RuntimeError(f"perf_analyzer measured nothing at concurrency {c}")

    def measure(self, cand: Candidate, cfg, image: np.ndarray) -> Candidate:
        """Load ``cfg``, check its answer, measure its levels; failures are recorded, not raised."""
        from dnx.model_repository.config_edit import config_json

        self.check_budget()
        t0 = time.monotonic()
        try:
            self.load(cfg.name, config_json(cfg))
            cand.load_s = time.monotonic() - t0
            out = self.answer(cfg, image)
            ref = self.reference.setdefault(cfg.name, out)
            cos = float(np.dot(out.ravel(), ref.ravel()) / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-12))
            if out.shape != ref.shape or cos < 0.999:
                raise RuntimeError(f"answers differ from the untuned model (cosine {cos:.4f})")
            best = -1.0
            levels, fill = space.levels_for(cfg, self.opts.levels, self.opts.max_concurrency)
            budget = self.opts.latency_budget_ms
            for c in levels:
                p = self.level(cfg.name, cand.index, c)
                cand.points.append(p)
                if budget is not None and p["p99_ms"] > budget:
                    break  # higher concurrency only adds latency
                if p["throughput"] < 0.97 * best and c != fill:
                    # Past saturation; only the fill level (the last one, full batches) may still win.
                    if fill is not None:
                        cand.points.append(self.level(cfg.name, cand.index, fill))
                    break
                best = max(best, p["throughput"])
            cand.score = space.score(cand.points, self.opts.objective, self.opts.latency_budget_ms)
        except ServerError:
            raise
        except (self.error_type, RuntimeError, DnxError, OSError) as exc:
            cand.status, cand.error = "failed", (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]
            cand.score = None
        cand.seconds = time.monotonic() - t0
        self.costs.append(cand.seconds)
        return cand

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


# ------------------------------------------------------------------ the run


def _default_out() -> Path:
    return Path("perf/results") / (_dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-tune")


def _check_writable(repo: Path, names: list[str]) -> None:
    for target in [repo] + [repo / n for n in names]:
        if not os.access(target, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {target}: no write permission; fix the permissions or pass --dry-run")
        cfg = target / "config.pbtxt"
        if target != repo and cfg.exists() and not os.access(cfg, os.W_OK):
            raise InputError(f"cannot write {cfg}: no write permission; fix the permissions or pass --dry-run")


def run_tune(opts: TuneOptions) -> TuneResult:
    """Tune the served models of ``opts.repository`` and (unless ``dry_run``) write the winners back."""
    from dnx.model_repository.config_edit import read_config
    from dnx.perf import launched_server
    from dnx.manifest import library_versions, read_manifest
    from dnx.perf.bench import machine_info
    from dnx.perf.sweep import ensemble_internal_steps, inspect_server
    from dnx.preprocess import photo_batch
    from dnx.signals import terminating
    from dnx.spec import spec_from_manifest

    opts.check()
    t_start = time.monotonic()
    repo = Path(opts.repository)
    for name in opts.models or []:
        if not (repo / name / "config.pbtxt").is_file():
            known = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
            raise InputError(f"model {name!r} is not in {repo}; choose from: {', '.join(known) or '(none)'}")
    bases = {n: read_config(repo / n) for n in opts.models or []}
    for cfg in bases.values():
        space.backend_of(cfg)
    if not opts.dry_run:
        _check_writable(repo, list(opts.models or []))
    out = Path(opts.out) if opts.out else _default_out()
    out.mkdir(parents=True, exist_ok=True)
    result = TuneResult(out, opts, machine=machine_info(), versions=library_versions())
    spec = spec_from_manifest(read_manifest(repo, required=False) or {})
    image = np.ascontiguousarray(photo_batch(spec)[:1])
    measurer = None
    with contextlib.ExitStack() as stack:
        # SIGINT/SIGTERM (once or more): stop measuring, stop the server, report what was measured.
        stack.enter_context(terminating())
        try:
            if opts.url is None:
                server = stack.enter_context(launched_server(repo, opts.models, out / "tritonserver.log"))
                url = server.grpc_url
            else:
                url = opts.url
            result.url = url
            found = inspect_server(url, "grpc", opts.models)
            # The ensemble's own preprocess/softmax steps are not variants to tune (unless named).
            steps = ensemble_internal_steps(found) if not opts.models else {}
            served = [m for m in found if not m.variable_inputs and m.name not in steps]
            for m in served:
                if m.name not in bases and (repo / m.name / "config.pbtxt").is_file():
                    with contextlib.suppress(InputError):
                        cfg = read_config(repo / m.name)
                        space.backend_of(cfg)
                        bases[m.name] = cfg
            names = [m.name for m in served if m.name in bases]
            if not names:
                raise InputError(f"no served model of {repo} can be tuned (dnx-rendered onnxruntime/openvino/"
                                 "tensorrt_plan configs); pass --models")
            if not opts.dry_run:
                _check_writable(repo, names)
            deadline = t_start + opts.budget_minutes * 60
            measurer = _Measurer(url, opts, out / "raw", deadline)
            stack.callback(measurer.close)
            if opts.url is not None:  # leave a shared server as the repository says, whatever happens
                stack.callback(_reload_all, measurer, names)
            _search(result, measurer, bases, names, opts, image)
        except KeyboardInterrupt:
            result.interrupted = True
    if not result.interrupted and not opts.dry_run:
        with signals_deferred():
            _write_back(result, bases, repo)
        written = [n for n, d in result.decisions.items() if d.get("written")]
        if opts.url is not None and written:  # the running server picks up the new configs now
            from dnx.model_repository.config_edit import repository_config_json

            with contextlib.suppress(Exception):
                client = lazy_import("tritonclient.grpc").InferenceServerClient(url=opts.url)
                for n in written:
                    client.load_model(n, config=repository_config_json(repo / n))
                client.close()
    else:
        _decide(result, bases)
    from dnx.perf.tune_report import write_tune_report

    result.paths = write_tune_report(result)
    if result.interrupted:
        raise TuneInterrupted(f"interrupted: {repo} is unchanged; the {len(result.candidates)} candidates measured "
                              f"are in {result.paths['md']}; rerun `dnx tune` to finish")
    return result


def _reload_all(measurer: _Measurer, names: list[str]) -> None:
    from dnx.model_repository.config_edit import repository_config_json

    for n in names:
        with contextlib.suppress(Exception):
            measurer.load(n, repository_config_json(Path(measurer.opts.repository) / n))


def _search(result: TuneResult, measurer: _Measurer, bases: dict, names: list[str], opts: TuneOptions,
            image: np.ndarray) -> None:
    tqdm = lazy_import("tqdm").tqdm
    dims = {n: space.space_for(bases[n], opts.cores, max(opts.levels)) for n in names}
    tuned = list(opts.models) if opts.models else None
    per_model = {n: 1 + sum(len(d.values) for d in dims[n]) for n in names}
    total = len(names) + sum(per_model[n] - 1 for n in (tuned or names[:opts.top]))
    bar = tqdm(total=total, unit="cand", desc="tune", disable=not opts.progress, leave=True)
    best_text = {}

    def evaluate(name: str, knobs: dict, baseline: bool = False) -> float | None:
        cand = Candidate(name, sum(c.model == name for c in result.candidates), dict(knobs), space.describe(knobs),
                         baseline=baseline)
        cfg = bases[name] if baseline else space.apply_knobs(bases[name], knobs)
        measurer.measure(cand, cfg, image)
        result.candidates.append(cand)
        bar.update(1)
        mine = [c for c in result.candidates if c.model == name and c.score is not None]
        if mine:
            b = max(mine, key=lambda c: c.score)
            best_text[name] = f"{name}: {_figure(b.score, opts.objective)}"
            bar.set_postfix_str("best " + "; ".join(best_text.values()), refresh=True)
        return cand.score

    try:
        baseline = {}
        for n in names:  # the previous config of every model: the figure a winner must beat
            with contextlib.suppress(space.BudgetExhausted):
                baseline[n] = evaluate(n, space.knobs_of(bases[n]), baseline=True)
        if tuned is None:
            ranked = sorted((n for n in names if baseline.get(n) is not None), key=lambda n: -baseline[n])
            tuned = ranked[:opts.top]
        for n in tuned:
            if n not in baseline:
                continue
            cache = {space._key(space.knobs_of(bases[n])): baseline[n]}

            def ev(knobs, n=n, cache=cache):
                key = space._key(knobs)
                if key not in cache:
                    cache[key] = evaluate(n, knobs)
                return cache[key]

            space.coordinate_search(dims[n], space.knobs_of(bases[n]), ev)
    finally:
        bar.close()


def _figure(score: float | None, objective: str) -> str:
    if score is None:
        return "-"
    return f"p99 {-score:.1f} ms at c1" if objective == "latency" else f"{score:.1f} infer/s"


def _decide(result: TuneResult, bases: dict) -> None:
    """Mark each model's winner and whether it beats its previous config by MIN_GAIN."""
    o = result.options
    for name in dict.fromkeys(c.model for c in result.candidates):
        mine = [c for c in result.candidates if c.model == name]
        base = next((c for c in mine if c.baseline), None)
        ok = [c for c in mine if c.score is not None]
        if not ok:
            result.decisions[name] = {"winner": None, "reason": "every candidate failed", "write": False}
            continue
        best = max(ok, key=lambda c: (c.score, c.baseline))  # ties keep the previous config
        g = space.gain(best.score, base.score if base else None, o.objective)
        tuned = len(mine) > 1
        write = bool(tuned and not best.baseline and g is not None and g >= space.MIN_GAIN)
        reason = ("not searched (only the --top best variants are tuned)" if not tuned else
                  "the previous config is best" if best.baseline else
                  f"gain {g:+.1%} is below the {space.MIN_GAIN:.0%} noise margin" if not write else "")
        winner = best if write else (base or best)
        winner.winner = True
        result.decisions[name] = {
            "winner": winner.label, "knobs": winner.knobs, "score": winner.score,
            "figure": _figure(winner.score, o.objective), "previous": base.label if base else None,
            "previous_figure": _figure(base.score if base else None, o.objective),
            "best_found": best.label, "best_found_figure": _figure(best.score, o.objective),
            "gain": g, "write": write, "reason": reason,
            "point": winner.at_score(o.objective, o.latency_budget_ms),
        }


def _write_back(result: TuneResult, bases: dict, repo: Path) -> None:
    """Write the winners and the manifest, all or nothing: a failed write puts back every file it replaced."""
    from dnx.errors import one_line
    from dnx.model_repository.config_edit import ORIG_SUFFIX
    from dnx.model_repository.layout import atomic_write_bytes

    saved = {p: p.read_bytes() if p.is_file() else None
             for n in bases for p in (repo / n / "config.pbtxt", repo / n / f"config.pbtxt{ORIG_SUFFIX}")}
    try:
        _write_files(result, bases, repo)
    except OSError as exc:
        try:
            for p, data in saved.items():
                if data is None:
                    if p.exists():  # (an unlink of nothing still fails on a read-only file system)
                        p.unlink()
                elif not p.is_file() or p.read_bytes() != data:
                    atomic_write_bytes(p, data)
            state = f"{repo} is unchanged"
        except OSError:
            state = f"some configs in {repo} could not be put back (see config.pbtxt.orig)"
        for d in result.decisions.values():
            d.pop("written", None)
        raise DnxError(f"writing the tuned configs failed ({one_line(exc)}); {state}; free space or fix the "
                       "folder's permissions, then rerun `dnx tune`") from None


def _write_files(result: TuneResult, bases: dict, repo: Path) -> None:
    from dnx.manifest import read_manifest
    from dnx.model_repository.config_edit import write_config

    _decide(result, bases)
    o = result.options
    # Read first: a corrupt manifest stops the run before any config is rewritten.
    manifest = read_manifest(repo, required=False) or {"models": {}}
    written = {}
    for name, d in result.decisions.items():
        if d["write"]:
            cfg = space.apply_knobs(bases[name], d["knobs"])
            write_config(repo / name, cfg)
            d["written"] = str(repo / name / "config.pbtxt")
            written[name] = cfg
            faults.point("tune-write-back:after-first-config") if len(written) == 1 else None
    for name, cfg in written.items():
        entry = manifest.setdefault("models", {}).setdefault(name, {})
        entry["config"] = {"max_batch_size": cfg.max_batch_size, "instance_count": cfg.instance_count,
                           "instance_kind": cfg.instance_kind, "preferred_batch_sizes": cfg.preferred_batch_sizes,
                           "max_queue_delay_us": cfg.max_queue_delay_us, "parameters": cfg.parameters}
    for name, d in result.decisions.items():
        # What the served config measured here: `dnx export` serves the fastest variant in the ensemble.
        point = d.get("point")
        if point and name in manifest.get("models", {}):
            manifest["models"][name]["tune"] = {"throughput": point["throughput"], "p99_ms": point["p99_ms"],
                                                "concurrency": point["concurrency"], "objective": o.objective}
    path = repo / MANIFEST_NAME
    manifest["tuning"] = {
        "tuned_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": result.machine, "versions": result.versions, "objective": o.objective,
        "latency_budget_ms": o.latency_budget_ms, "budget_minutes": o.budget_minutes, "concurrency": list(o.levels),
        "report": str(result.out_dir),
        "models": {n: {k: d.get(k) for k in ("winner", "previous", "figure", "previous_figure", "gain", "point",
                                             "written")} for n, d in result.decisions.items()},
    }
    faults.point("tune-write-back:before-manifest")
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
