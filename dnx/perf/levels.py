"""Which concurrency levels to measure: ranges, the level that fills a config's batches, saturation.

Pure policy shared by ``dnx perf``, ``dnx bench`` and ``dnx tune``; nothing here talks to a
server. Every config reaches it as a :class:`~dnx.model_repository.render.TritonConfig`
(a served model's JSON through :meth:`TritonConfig.from_served`), so the fill level is derived once.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnx.errors import InputError
from dnx.model_repository.render import TritonConfig
from dnx.runtimes.backend_common import is_yes

# Highest concurrency dnx adds on its own to fill a model's batches (tune, bench): 32 is what
# bench's fastest in-process OpenVINO run keeps in flight (AsyncInferQueue(4) x batch 8).
FILL_CAP = 32
# Saturation: this many levels in a row without beating the best before them by SATURATION_GAIN.
FLAT_LEVELS = 3
SATURATION_GAIN = 0.03


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


def fill_concurrency(instances: int, batch: int, cap: int = FILL_CAP) -> int:
    """Requests in flight that keep every instance busy with full batches: 2 x instances x batch, at most ``cap``.

    Twice: while an instance runs one batch, the next one queues. Below this level a model
    that pads (openvino with ENABLE_BATCH_PADDING) pays for whole batches of mostly zeros.
    """
    return max(1, min(cap, 2 * max(1, instances) * max(1, batch)))


def fill_level(cfg: TritonConfig, cap: int = FILL_CAP) -> int:
    """:func:`fill_concurrency` for ``cfg``: its largest preferred batch, else max_batch_size (1 without batching)."""
    batch = max(cfg.preferred_batch_sizes, default=cfg.max_batch_size) if cfg.dynamic_batching else 1
    return fill_concurrency(cfg.instance_count, batch, cap)


def pads_batches(cfg: TritonConfig) -> bool:
    """True when the backend pads partial batches to full ones (openvino's ``ENABLE_BATCH_PADDING``)."""
    return is_yes(cfg.parameters, "ENABLE_BATCH_PADDING") and cfg.max_batch_size > 1


def saturation_floor(cfg: TritonConfig, cap: int = FILL_CAP) -> int:
    """Lowest level at which :func:`saturated` may stop a sweep: the fill level where batches are padded
    (a partly filled batch costs a full one there), else 2 x instances."""
    return fill_level(cfg, cap) if pads_batches(cfg) else fill_concurrency(cfg.instance_count, 1, cap)


def saturated(throughput: dict[int, float], floor: int = 1) -> bool:
    """True when the last :data:`FLAT_LEVELS` levels all stayed below the best before them + 3 %.

    Past that point a closed-loop client only queues more (Little's law: latency grows with
    concurrency, throughput does not). Never before ``floor``: a model that pads its batches
    gains late, once they fill (:func:`saturation_floor`).
    """
    levels = sorted(throughput)
    if len(levels) <= FLAT_LEVELS or levels[-1] < floor:
        return False
    best_before = max(throughput[c] for c in levels[:-FLAT_LEVELS])
    return all(throughput[c] < best_before * (1 + SATURATION_GAIN) for c in levels[-FLAT_LEVELS:])


def levels_for(cfg: TritonConfig, levels: tuple[int, ...], cap: int) -> tuple[tuple[int, ...], int | None]:
    """``(levels, fill)``: the levels to measure ``cfg`` at, and the fill level added beyond them (or None).

    Batches only form, and padded batches only pay off, once enough requests are in flight;
    a candidate with larger batches or more instances is measured where it can fill them too.
    """
    fill = fill_level(cfg, cap)
    if len(levels) == 1 and levels[0] == 1:  # the latency objective measures concurrency 1 only
        return levels, None
    if fill > max(levels):
        return tuple(levels) + (fill,), fill
    return tuple(levels), None
