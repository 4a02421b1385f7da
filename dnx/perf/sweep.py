"""Concurrency sweeps with the real ``perf_analyzer`` against a running Triton server.

One ``perf_analyzer`` process measures one (model, batch size, concurrency level): it writes
its CSV only when its whole range is done, so one level per process puts every completed
level on disk at once, and a server that dies mid-sweep costs only the level in progress
(:func:`sweep` reports each level through ``on_level``; ``dnx perf --resume`` continues from
there). When a level never gets a stable measurement, perf_analyzer leaves it out of the
CSV (exit code 2). Such a level is measured again with a doubled window; only when the
retries are spent is it measured once more with the stability check relaxed, and its row
flagged ``stable=False``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dnx._lazy import lazy_import
from dnx.errors import InputError, MissingDependencyError, PerfError, ServerError

# perf_analyzer's exit code when a measurement never stabilises.
STABILITY_EXIT_CODE = 2
# Relaxed stability used for the last attempt at a level that stays unstable (percent).
RELAXED_STABILITY = 1000.0
_UNSTABLE_RE = re.compile(r"Failed to obtain stable measurement within \d+ measurement windows for concurrency (\d+)")
_LEVEL_RE = re.compile(r"^Request concurrency: (\d+)")
# perf_analyzer's message (exit 3) when a window ended before any request finished (a slow or
# loaded server): retried like an unstable level, with a doubled window.
_WINDOW_TOO_SHORT = "Please use a larger time window"

# perf_analyzer CSV column -> our field name; all times there are microseconds.
_TIME_COLUMNS = {
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
}
# perf_analyzer's own "Avg latency" is the sum of these (checked against its stdout).
_AVG_PARTS = ("client_send_ms", "network_ms", "server_queue_ms", "server_compute_input_ms",
              "server_compute_infer_ms", "server_compute_output_ms", "client_recv_ms")


@dataclass(frozen=True)
class ConcurrencyRange:
    """perf_analyzer's ``start:end[:step]``, validated."""

    start: int
    end: int
    step: int = 1

    @classmethod
    def parse(cls, text: str) -> "ConcurrencyRange":
        """Parse ``"1:16"``, ``"1:16:2"`` or ``"4"``; raise :class:`InputError` on anything else."""
        parts = str(text).strip().split(":")
        hint = "use start:end[:step] with 1 <= start <= end and step >= 1, e.g. 1:16 or 1:16:2"
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"--concurrency {text!r} is not start:end[:step]; {hint}") from None
        if not 1 <= len(nums) <= 3:
            raise InputError(f"--concurrency {text!r} is not start:end[:step]; {hint}")
        start, end, step = (nums + [nums[0], 1][len(nums) - 1:])[:3]
        if start < 1 or step < 1:
            raise InputError(f"--concurrency {text!r}: start and step must be >= 1; {hint}")
        if end < start:
            raise InputError(f"--concurrency {text!r}: end {end} is below start {start}; {hint}")
        return cls(start, end, step)

    def levels(self) -> list[int]:
        """The concurrency values perf_analyzer visits."""
        return list(range(self.start, self.end + 1, self.step))

    def __str__(self) -> str:
        return f"{self.start}:{self.end}:{self.step}"


@dataclass
class Measurement:
    """One perf_analyzer CSV row: one concurrency level, times in milliseconds."""

    concurrency: int
    throughput: float  # inferences (images) per second
    client_send_ms: float
    network_ms: float
    server_queue_ms: float
    server_compute_input_ms: float
    server_compute_infer_ms: float
    server_compute_output_ms: float
    client_recv_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    gpu_utilization: str = ""  # only with --collect-metrics --verbose-csv on a GPU server
    stable: bool = True
    window_ms: int = 0


def parse_csv(path: str | os.PathLike) -> list[Measurement]:
    """Read a perf_analyzer ``-f`` CSV; rows come back sorted by concurrency, times in ms.

    perf_analyzer sorts its rows by throughput and writes times in microseconds.
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise PerfError(f"cannot read perf_analyzer CSV {path}: {exc}; rerun the sweep") from None
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            times = {name: float(row[col]) / 1000.0 for col, name in _TIME_COLUMNS.items()}
            out.append(Measurement(
                concurrency=int(row["Concurrency"]),
                throughput=float(row["Inferences/Second"]),
                avg_ms=sum(times[k] for k in _AVG_PARTS),
                gpu_utilization=(row.get("Avg GPU Utilization") or "").strip(),
                **times,
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise PerfError(
                f"{path} line {i} is not a perf_analyzer concurrency CSV row ({exc!r}); "
                "was it written by perf_analyzer --concurrency-range -f?"
            ) from None
    return sorted(out, key=lambda m: m.concurrency)


def find_perf_analyzer() -> Path:
    """``perf_analyzer`` from PATH (Triton SDK container), else the one beside this Python."""
    found = shutil.which("perf_analyzer")
    candidates = [Path(found)] if found else []
    candidates.append(Path(sys.executable).parent / "perf_analyzer")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise MissingDependencyError(
        "perf_analyzer not found on PATH or beside the Python interpreter; "
        "install tritonclient[all]==2.50.0 in this environment or use the Triton SDK container"
    )


def cudart_lib_dir() -> Path | None:
    """The folder holding ``libcudart.so.12`` from the nvidia-cuda-runtime-cu12 wheel, if installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(loc) / "lib"
        if (lib / "libcudart.so.12").is_file():
            return lib
    return None


def perf_analyzer_env(base: dict | None = None) -> dict:
    """Environment for perf_analyzer: the 2.50 wheel's binary links ``libcudart.so.12``."""
    env = dict(os.environ if base is None else base)
    lib = cudart_lib_dir()
    if lib is not None:
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        if str(lib) not in parts:
            env["LD_LIBRARY_PATH"] = ":".join([str(lib), *parts])
    return env


def build_argv(
    binary: str | os.PathLike,
    model: str,
    *,
    url: str,
    protocol: str,
    batch_size: int,
    concurrency: ConcurrencyRange,
    measurement_interval_ms: int,
    csv_path: str | os.PathLike,
    percentile: int | None = None,
    stability_percentage: float | None = None,
    max_trials: int | None = None,
    collect_metrics: bool = False,
    metrics_url: str | None = None,
    verbose_csv: bool = False,
    input_data: str | os.PathLike | None = None,
    measurement_mode: str = "time_windows",
    measurement_request_count: int | None = None,
) -> list[str]:
    """The perf_analyzer command line for one (model, batch size) over a concurrency range (pure).

    ``measurement_mode="count_windows"``: each window holds at least ``measurement_request_count``
    requests instead of lasting ``measurement_interval_ms``, so windows adapt to the model's speed.
    """
    argv = [
        str(binary), "-m", model, "-u", url, "-i", protocol, "-b", str(batch_size),
        "--concurrency-range", str(concurrency),
        "--measurement-interval", str(int(measurement_interval_ms)),
    ]
    if measurement_mode == "count_windows":
        argv += ["--measurement-mode", "count_windows"]
        if measurement_request_count is not None:
            argv += ["--measurement-request-count", str(int(measurement_request_count))]
    if percentile is not None:
        argv += ["--percentile", str(percentile)]
    if stability_percentage is not None:
        argv += ["--stability-percentage", f"{stability_percentage:g}"]
    if max_trials is not None:
        argv += ["--max-trials", str(max_trials)]
    if input_data is not None:
        argv += ["--input-data", str(input_data)]
    if collect_metrics:
        argv.append("--collect-metrics")
        if metrics_url:
            argv += ["--metrics-url", metrics_url]
    if verbose_csv:
        argv.append("--verbose-csv")
    return argv + ["-f", str(csv_path)]


def shell_line(argv: list[str], env: dict | None = None) -> str:
    """A copy-pastable shell line for ``argv`` (with the LD_LIBRARY_PATH it needs)."""
    prefix = f"LD_LIBRARY_PATH={shlex.quote(env['LD_LIBRARY_PATH'])} " if env and env.get("LD_LIBRARY_PATH") else ""
    return prefix + shlex.join(argv)


# ---------------------------------------------------------------- server queries

# Highest concurrency dnx adds on its own to fill a model's batches (tune, bench): 32 is what
# bench's fastest in-process OpenVINO run keeps in flight (AsyncInferQueue(4) x batch 8).
FILL_CAP = 32


def fill_concurrency(instances: int, batch: int, cap: int = FILL_CAP) -> int:
    """Requests in flight that keep every instance busy with full batches: 2 x instances x batch, at most ``cap``.

    Twice: while an instance runs one batch, the next one queues. Below this level a model
    that pads (openvino with ENABLE_BATCH_PADDING) pays for whole batches of mostly zeros.
    """
    return max(1, min(cap, 2 * max(1, instances) * max(1, batch)))


# Saturation: this many levels in a row without beating the best before them by SATURATION_GAIN.
FLAT_LEVELS = 3
SATURATION_GAIN = 0.03


def saturated(throughput: dict[int, float], floor: int = 1) -> bool:
    """True when the last :data:`FLAT_LEVELS` levels all stayed below the best before them + 3 %.

    Past that point a closed-loop client only queues more (Little's law: latency grows with
    concurrency, throughput does not). Never before ``floor``: a model that pads its batches
    gains late, once they fill (:meth:`ServedModel.saturation_floor`).
    """
    levels = sorted(throughput)
    if len(levels) <= FLAT_LEVELS or levels[-1] < floor:
        return False
    best_before = max(throughput[c] for c in levels[:-FLAT_LEVELS])
    return all(throughput[c] < best_before * (1 + SATURATION_GAIN) for c in levels[-FLAT_LEVELS:])


@dataclass
class ServedModel:
    """A READY model on the server and the config read back from it."""

    name: str
    version: str
    config: dict

    @property
    def max_batch_size(self) -> int:
        return int(self.config.get("max_batch_size", 0))

    @property
    def variable_inputs(self) -> list[str]:
        """Inputs with a variable (-1) dimension: perf_analyzer would need ``--shape`` for them."""
        return [i.get("name", "?") for i in self.config.get("input", []) if any(int(d) < 0 for d in i.get("dims", []))]

    @property
    def string_inputs(self) -> list[str]:
        """Inputs of TYPE_STRING (encoded images): measured with real JPEGs as ``--input-data``."""
        return [i.get("name", "?") for i in self.config.get("input", []) if i.get("data_type") == "TYPE_STRING"]

    @property
    def ensemble_steps(self) -> list[str]:
        """Model names of the steps, for an ensemble (empty otherwise)."""
        return [st.get("model_name", "") for st in (self.config.get("ensemble_scheduling") or {}).get("step", [])]

    @property
    def instances(self) -> int:
        from dnx.runtimes.backend_common import instance_count

        return instance_count(self.config)

    def fill_concurrency(self, cap: int = FILL_CAP) -> int:
        """:func:`fill_concurrency` for this config: its largest preferred batch, else max_batch_size."""
        dyn = self.config.get("dynamic_batching")
        preferred = [int(b) for b in (dyn or {}).get("preferred_batch_size", [])]
        batch = max(preferred, default=self.max_batch_size) if dyn is not None else 1
        return fill_concurrency(self.instances, batch, cap)

    def saturation_floor(self, cap: int = FILL_CAP) -> int:
        """Lowest level at which :func:`saturated` may stop a sweep: the fill level where batches are padded
        (a partly filled batch costs a full one there), else 2 x instances."""
        from dnx.runtimes.backend_common import config_parameters, is_yes

        pads = is_yes(config_parameters(self.config), "ENABLE_BATCH_PADDING") and self.max_batch_size > 1
        return self.fill_concurrency(cap) if pads else fill_concurrency(self.instances, 1, cap)

    @property
    def on_gpu(self) -> bool:
        return any(g.get("kind") == "KIND_GPU" for g in self.config.get("instance_group", []))

    def summary(self) -> dict:
        """The config fields that decide performance (for reports)."""
        c = self.config
        return {
            "version": self.version,
            "backend": c.get("backend") or c.get("platform", ""),
            "max_batch_size": self.max_batch_size,
            # gRPC's JSON omits zero defaults that HTTP's includes: normalise to both fields.
            "dynamic_batching": None if "dynamic_batching" not in c else {
                "preferred_batch_size": [int(b) for b in c["dynamic_batching"].get("preferred_batch_size", [])],
                "max_queue_delay_microseconds": int(c["dynamic_batching"].get("max_queue_delay_microseconds", 0)),
            },
            "instance_group": [
                {"count": int(g.get("count", 1)), "kind": g.get("kind", "")} for g in c.get("instance_group", [])
            ],
            "parameters": {k: v.get("string_value", "") for k, v in (c.get("parameters") or {}).items()},
        }


def _client(url: str, protocol: str):
    if protocol == "grpc":
        return lazy_import("tritonclient.grpc").InferenceServerClient(url=url)
    if protocol == "http":
        return lazy_import("tritonclient.http").InferenceServerClient(url=url)
    raise InputError(f"--protocol {protocol!r} is not supported; use grpc or http")


def inspect_server(url: str, protocol: str = "grpc", models: list[str] | None = None) -> list[ServedModel]:
    """Check the server is up and return the requested (default: all READY) models with their configs.

    Raises :class:`ServerError` when the server is down and :class:`InputError` for a model
    that is unknown or not ready.
    """
    utils = lazy_import("tritonclient.utils")
    client = _client(url, protocol)
    try:
        return _inspect(client, utils.InferenceServerException, f"{url} ({protocol})", protocol, models)
    finally:
        client.close()


def _inspect(client, client_error, where: str, protocol: str, models: list[str] | None) -> list[ServedModel]:
    json_kw = {"as_json": True} if protocol == "grpc" else {}
    try:
        if not client.is_server_live():
            raise ServerError(f"the Triton server at {where} is not live; start it with `make serve` or pass --launch")
        index = client.get_model_repository_index(**json_kw)
    except (client_error, OSError) as exc:  # the HTTP client raises plain socket errors
        msg = (str(exc).splitlines() or [""])[0] or exc.__class__.__name__
        raise ServerError(
            f"no Triton server answers at {where} ({msg}); start one with `make serve`, pass --launch, or fix --url"
        ) from None
    entries = index.get("models", []) if isinstance(index, dict) else index
    states = {e["name"]: (e.get("state", ""), e.get("reason", "")) for e in entries}
    ready = sorted(n for n, (s, _) in states.items() if s == "READY")
    wanted = models or ready
    if not wanted:
        raise ServerError(f"the server at {where} has no READY model; check its log and the repository it serves")
    for name in wanted:
        if name not in states:
            raise InputError(
                f"model {name!r} is not in the repository served at {where}; "
                f"choose from: {', '.join(ready) or '(none ready)'}"
            )
        state, reason = states[name]
        if state != "READY":
            raise ServerError(f"model {name!r} is {state or 'not loaded'} on {where} ({reason or 'no reason given'}); "
                              "check the server log")
    out = []
    for name in wanted:
        try:
            meta = client.get_model_config(name, **json_kw)
        except (client_error, OSError) as exc:
            raise ServerError(f"cannot read the config of {name!r} from {where}: {exc}; check the server log") from None
        cfg = meta.get("config", meta)
        version = next((e.get("version", "") for e in entries if e["name"] == name and e.get("version")), "")
        out.append(ServedModel(name=name, version=str(version), config=cfg))
    return out


def ensemble_internal_steps(models: list[ServedModel]) -> dict[str, str]:
    """First and last steps of each ensemble (preprocess, softmax): measured through the ensemble, not alone."""
    out = {}
    for m in models:
        steps = m.ensemble_steps
        for step in (steps[:1] + steps[-1:]) if len(steps) > 2 else []:
            out[step] = f"ensemble step of {m.name} (measured through it)"
    return out


def default_metrics_url(url: str, port: int = 8002) -> str:
    """``host:8002/metrics`` for a server at ``host:port``."""
    host = url.rsplit(":", 1)[0] if ":" in url else url
    return f"{host}:{port}/metrics"


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepOptions:
    """What to measure and how; mirrors the ``dnx perf`` flags."""

    url: str = "127.0.0.1:8001"
    protocol: str = "grpc"
    concurrency: ConcurrencyRange = field(default_factory=lambda: ConcurrencyRange(1, 16, 1))
    batch_sizes: tuple[int, ...] = (1,)
    measurement_interval_ms: int = 5000
    percentile: int | None = None
    stability_percentage: float | None = None
    max_trials: int | None = None
    retries: int = 1  # longer windows (x2 each) for a level that is unstable
    collect_metrics: bool = False
    metrics_url: str | None = None
    verbose_csv: bool = False
    input_data: str | None = None
    progress: bool = True
    measurement_mode: str = "time_windows"  # or count_windows (windows of measurement_request_count requests)
    measurement_request_count: int = 50
    skip_saturated: bool = False  # stop raising concurrency once throughput is flat (see saturated())

    def check(self) -> None:
        """Raise :class:`InputError` for values perf_analyzer would reject."""
        if self.protocol not in ("grpc", "http"):
            raise InputError(f"--protocol {self.protocol!r} is not supported; use grpc or http")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InputError(f"--batch-size {list(self.batch_sizes)} must list sizes >= 1, e.g. 1,4")
        if self.measurement_interval_ms < 100:
            raise InputError(f"--measurement-interval {self.measurement_interval_ms} ms is too short; use 100 or more")
        if self.percentile is not None and not 1 <= self.percentile <= 99:
            raise InputError(f"--percentile {self.percentile} must be within 1..99")
        if self.measurement_mode not in ("time_windows", "count_windows"):
            raise InputError(f"--measurement-mode {self.measurement_mode!r} is unknown; use time_windows or count_windows")
        if self.measurement_request_count < 10:
            raise InputError(f"--measurement-request-count {self.measurement_request_count} is too small; use 10 or more")
        if self.stability_percentage is not None and self.stability_percentage <= 0:
            raise InputError(f"--stability-percentage {self.stability_percentage} must be > 0, e.g. 10")


@dataclass
class Run:
    """One perf_analyzer invocation as it happened."""

    model: str
    batch_size: int
    concurrency: str
    window_ms: int
    command: str
    csv: str | None
    log: str
    returncode: int
    unstable_at: int | None = None


@dataclass
class SweepResult:
    """Measurements per (model, batch size) and every perf_analyzer run made to get them."""

    out_dir: Path
    models: list[ServedModel]
    options: SweepOptions
    measurements: dict[tuple[str, int], list[Measurement]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    perf_analyzer: str = ""
    incomplete: str | None = None  # why the sweep stopped before every level was measured
    # (model, batch) -> levels not measured because throughput had saturated below them
    saturated: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def points(self) -> int:
        """Measured (model, batch, concurrency) points."""
        return sum(len(v) for v in self.measurements.values())

    def planned(self) -> int:
        """Points the options ask for (plus fill levels already added by :func:`sweep_with_fill`)."""
        levels = set(self.options.concurrency.levels())
        extra = sum(len({m.concurrency for m in v} - levels) for v in self.measurements.values())
        skipped = sum(len(v) for v in self.saturated.values())
        return len(self.models) * len(self.options.batch_sizes) * len(levels) + extra - skipped


class _Progress:
    """tqdm bar counting (model, batch, concurrency) points."""

    def __init__(self, total: int, enabled: bool):
        tqdm = lazy_import("tqdm").tqdm
        self.bar = tqdm(total=total, unit="pt", desc="perf", disable=not enabled, file=sys.stderr, leave=True)
        self.done: set[tuple[str, int, int]] = set()

    def level_done(self, model: str, batch: int, level: int) -> None:
        key = (model, batch, level)
        if key not in self.done:
            self.done.add(key)
            self.bar.update(1)

    def describe(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self.bar.close()


def _run_once(argv: list[str], env: dict, log_path: Path, progress: _Progress, model: str, batch: int) -> tuple[int, str]:
    """Run perf_analyzer, streaming its output to ``log_path`` and the progress bar."""
    lines = []
    level = None
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise PerfError(f"cannot start {argv[0]}: {exc}; check the perf_analyzer install") from None
    try:
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                m = _LEVEL_RE.match(line)
                if m:
                    level = int(m.group(1))
                    progress.describe(f"{model} b={batch} c={level}")
                elif line.startswith("  Client:") and level is not None:
                    progress.level_done(model, batch, level)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return rc, "".join(lines)


def _contiguous(levels: list[int], step: int) -> list[list[int]]:
    """Split sorted levels into runs perf_analyzer can sweep with one ``start:end:step``."""
    runs: list[list[int]] = []
    for c in levels:
        if runs and c - runs[-1][-1] == step:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


@dataclass(frozen=True)
class Segment:
    """Consecutive concurrency levels for one perf_analyzer run."""

    levels: tuple[int, ...]
    window_ms: int
    attempt: int = 0  # how many times the window was doubled
    relaxed: bool = False  # last resort: stability check relaxed, rows flagged unstable


def plan_retries(seg: Segment, measured: set[int], unstable: set[int], step: int, retries: int) -> list[Segment]:
    """The runs still needed after ``seg`` produced ``measured`` levels and reported ``unstable`` ones (pure).

    An unstable level is retried alone with a doubled window, ``retries`` times, then once
    relaxed; other levels missing from the CSV are measured again with the same window.
    """
    missing = [c for c in seg.levels if c not in measured]
    out = []
    for c in missing:
        if c in unstable:
            out.append(Segment((c,), seg.window_ms * 2, seg.attempt + 1) if seg.attempt < retries
                       else Segment((c,), seg.window_ms, seg.attempt, relaxed=True))
    for run in _contiguous([c for c in missing if c not in unstable], step):
        out.append(Segment(tuple(run), seg.window_ms, seg.attempt, seg.relaxed))
    return out


def measure(
    model: ServedModel, batch: int, opts: SweepOptions, out_dir: Path, binary: Path, env: dict, progress: _Progress,
    collected: dict[int, Measurement] | None = None, runs: list[Run] | None = None,
    on_level: Callable[[], None] | None = None, skipped: list[int] | None = None,
) -> tuple[list[Measurement], list[Run]]:
    """Measure one (model, batch size) over ``opts.concurrency``, one level per perf_analyzer run.

    Levels already in ``collected`` are not measured again. ``collected`` and ``runs`` are
    filled as each level finishes (and ``on_level`` called), so they hold every completed
    level even when a later one raises :class:`PerfError`. With ``opts.skip_saturated`` the
    levels above a saturated throughput (:func:`saturated`) are left out and listed in ``skipped``.
    """
    skipped = [] if skipped is None else skipped
    floor = model.saturation_floor()

    def stop_if_saturated() -> None:
        if opts.skip_saturated and saturated({c: m.throughput for c, m in collected.items()}, floor):
            skipped[:] = sorted({c for seg in pending for c in seg.levels if c not in collected})
            pending.clear()

    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    step = opts.concurrency.step
    collected = {} if collected is None else collected
    runs = [] if runs is None else runs
    pending = [Segment((c,), opts.measurement_interval_ms) for c in opts.concurrency.levels() if c not in collected]
    stop_if_saturated()  # a resumed sweep may already be past saturation
    input_data = opts.input_data
    if model.string_inputs and not str(input_data or "").endswith(".json"):
        # Random bytes are not images (every request would fail): send real JPEGs.
        from dnx.perf.images import write_image_input_data

        input_data = str(write_image_input_data(out_dir / "input-data-images.json", model.string_inputs[0]))
    while pending:
        seg = pending.pop(0)
        rng = ConcurrencyRange(seg.levels[0], seg.levels[-1], step)
        levels = f"c{rng.start}" if rng.start == rng.end else f"c{rng.start}-{rng.end}"
        stem = f"{model.name}_b{batch}_{levels}_w{seg.window_ms}" + ("_relaxed" if seg.relaxed else "")
        csv_path, log_path = raw / f"{stem}.csv", raw / f"{stem}.log"
        argv = build_argv(
            binary, model.name, url=opts.url, protocol=opts.protocol, batch_size=batch, concurrency=rng,
            measurement_interval_ms=seg.window_ms, csv_path=csv_path, percentile=opts.percentile,
            stability_percentage=RELAXED_STABILITY if seg.relaxed else opts.stability_percentage,
            max_trials=opts.max_trials, collect_metrics=opts.collect_metrics, metrics_url=opts.metrics_url,
            verbose_csv=opts.verbose_csv, input_data=input_data, measurement_mode=opts.measurement_mode,
            # A retry doubles the window: in count mode, the request count.
            measurement_request_count=opts.measurement_request_count * seg.window_ms // opts.measurement_interval_ms,
        )
        csv_path.unlink(missing_ok=True)
        rc, text = _run_once(argv, env, log_path, progress, model.name, batch)
        # perf_analyzer aborts (exit 2, no CSV) when the first level is unstable, but
        # exits 0 and leaves a later unstable level out of the CSV: both are handled alike.
        unstable = {int(x) for x in _UNSTABLE_RE.findall(text)}
        retryable = rc in (0, STABILITY_EXIT_CODE)
        if _WINDOW_TOO_SHORT in text and not seg.relaxed:
            unstable |= set(seg.levels)
            retryable = True
        wrote = retryable and csv_path.is_file()
        got = {m.concurrency: m for m in parse_csv(csv_path)} if wrote else {}
        runs.append(Run(model.name, batch, str(rng), seg.window_ms, shell_line(argv, env),
                        str(csv_path.relative_to(out_dir)) if wrote else None,
                        str(log_path.relative_to(out_dir)), rc, min(unstable) if unstable else None))
        for meas in got.values():
            meas.window_ms, meas.stable = seg.window_ms, not seg.relaxed
            collected[meas.concurrency] = meas
            progress.level_done(model.name, batch, meas.concurrency)
        if on_level:
            on_level()
        missing = [c for c in seg.levels if c not in got]
        if missing and (not retryable or not unstable & set(missing) or seg.relaxed):
            tail = " | ".join(ln.strip() for ln in text.strip().splitlines()[-3:])
            raise PerfError(
                f"perf_analyzer measured no result for {model.name} batch {batch} concurrency {missing} "
                f"(exit {rc}): {tail}; see {log_path}"
            )
        pending[:0] = plan_retries(seg, set(got), unstable, step, opts.retries)
        if not pending or not set(pending[0].levels) & set(seg.levels):  # not while retrying this level
            stop_if_saturated()
    return [collected[c] for c in sorted(collected)], runs


def sweep(models: list[ServedModel], opts: SweepOptions, out_dir: str | os.PathLike,
          result: SweepResult | None = None, on_level: Callable[[SweepResult], None] | None = None) -> SweepResult:
    """Run perf_analyzer for every (model, batch size) and concurrency level.

    Raw CSVs and logs go to ``<out_dir>/raw/``; :func:`dnx.perf.report.write_report` turns
    the result into the tidy CSV, report and plots. Pass a partly filled ``result`` to
    continue a sweep (its measured levels are skipped). ``result`` is filled level by level
    and ``on_level(result)`` called after each, so a caller holding it keeps every completed
    level when this raises (server gone, signal).
    """
    opts.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in models:
        too_big = [b for b in opts.batch_sizes if b > max(m.max_batch_size, 1)]
        if too_big:
            raise InputError(
                f"--batch-size {too_big} exceeds {m.name}'s max_batch_size {m.max_batch_size}; "
                "pick smaller sizes or re-export with a larger --max-batch"
            )
    binary = find_perf_analyzer()
    env = perf_analyzer_env()
    if result is None:
        result = SweepResult(out_dir=out_dir, models=models, options=opts)
    result.perf_analyzer = str(binary)
    progress = _Progress(result.planned(), opts.progress)
    progress.bar.update(result.points())
    try:
        for m in models:
            for b in opts.batch_sizes:
                collected = {x.concurrency: x for x in result.measurements.get((m.name, b), [])}

                def saved(m=m, b=b, collected=collected):
                    result.measurements[(m.name, b)] = [collected[c] for c in sorted(collected)]
                    if on_level:
                        on_level(result)

                skipped: list[int] = []
                measure(m, b, opts, out_dir, binary, env, progress, collected, result.runs, saved, skipped)
                if skipped:
                    result.saturated[(m.name, b)] = skipped
                    progress.bar.update(len(skipped))
    finally:
        progress.close()
    return result


def sweep_with_fill(models: list[ServedModel], opts: SweepOptions, out_dir: str | os.PathLike,
                    cap: int = FILL_CAP) -> SweepResult:
    """:func:`sweep`, then each model once more at its fill level when that lies beyond ``opts.concurrency``.

    A model tuned to larger batches or more instances only shows its throughput once its
    batches fill (:meth:`ServedModel.fill_concurrency`); the extra level is one more point.
    """
    result = sweep(models, opts, out_dir)
    top = max(opts.concurrency.levels())
    for m in models:
        fill = m.fill_concurrency(cap)
        if fill > top:
            one = dataclasses.replace(opts, concurrency=ConcurrencyRange(fill, fill, 1))
            sweep([m], one, out_dir, result=result)
    return result
