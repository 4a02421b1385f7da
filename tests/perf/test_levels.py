"""Concurrency policy over the one config type: fill level and saturation floor, from a served config's JSON."""

from __future__ import annotations

from dnx.model_repository.render import TritonConfig
from dnx.perf.levels import fill_level, saturated, saturation_floor

# What Triton's gRPC JSON says for an openvino model that pads its batches (2 instances, batches of 4).
PADDED = {"name": "ov", "backend": "openvino", "max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [4]},
          "instance_group": [{"count": 1, "kind": "KIND_CPU"}, {"count": 1, "kind": "KIND_CPU"}],
          "input": [{"name": "input", "dims": ["3", "224", "224"]}], "output": [{"name": "logits", "dims": ["1000"]}],
          "parameters": {"ENABLE_BATCH_PADDING": {"string_value": "yes"}, "NUM_STREAMS": {"string_value": "2"}},
          "model_warmup": [{"name": "w", "batch_size": 1}]}


def test_from_served_reads_instances_batching_and_parameters():
    cfg = TritonConfig.from_served(PADDED)
    assert cfg.instance_count == 2 and cfg.dynamic_batching and cfg.preferred_batch_sizes == [4]
    assert cfg.max_queue_delay_us == 0  # gRPC's JSON omits the zero HTTP's JSON holds
    assert cfg.parameters == {"ENABLE_BATCH_PADDING": "yes", "NUM_STREAMS": "2"}
    assert (cfg.input_name, cfg.input_dims, cfg.output_dims) == ("input", (3, 224, 224), (1000,))
    assert cfg.backend == "openvino" and cfg.warmup_batch_sizes == [1]


def test_fill_level_and_saturation_floor_follow_padding():
    padded = TritonConfig.from_served(PADDED)
    assert fill_level(padded) == 16 and fill_level(padded, cap=6) == 6
    assert saturation_floor(padded) == 16  # padded: a partial batch costs a full one, wait for full ones
    plain = TritonConfig.from_served({k: v for k, v in PADDED.items() if k != "parameters"})
    assert saturation_floor(plain) == 4  # 2 x instances
    assert fill_level(TritonConfig.from_served({"max_batch_size": 16})) == 2  # no batcher: batch 1


def test_saturated_needs_three_flat_levels_past_the_floor():
    flat = {1: 10.0, 2: 20.0, 3: 20.1, 4: 20.2, 5: 20.3}
    assert saturated(flat) and not saturated(flat, floor=6)
    assert not saturated({1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0, 5: 50.0})
