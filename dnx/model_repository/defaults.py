"""A variant's Triton settings before any flag: one type for every runtime."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingDefaults:
    """Dynamic batching and instances of one variant, and for OpenVINO its streams, hint and threads.

    ``max_batch_size`` None leaves it to the export's ``--max-batch`` default. Field names are
    the config's (``preferred_batch_size``, ``instance_group.count``).
    """

    max_batch_size: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instance_count: int = 1
    num_streams: int = 1  # OpenVINO streams
    performance_hint: str = "LATENCY"  # OpenVINO PERFORMANCE_HINT
    threads: int | None = None  # INFERENCE_NUM_THREADS; None: OpenVINO's default, the serving machine's cores
