"""What dnx decides per CPU kind (dnx.cpu), on the recorded /proc/cpuinfo of every kind seen.

Nothing here depends on the CPU running the suite: each test names the CPU it asks about.
"""

from pathlib import Path

import numpy as np
import pytest

from dnx.cpu import (NEEDS_BF16, NEEDS_NOTHING, NEEDS_VNNI, CpuInfo, numerics_need, numerics_record,
                     parse_cpuinfo, saturated_pairs, this_cpu, unsafe_variants)
from dnx.manifest import Manifest

CPUINFO = Path(__file__).parent / "fixtures" / "cpuinfo"
# file -> (model name, VNNI, native bf16)
KINDS = {
    "intel-xeon-avx512-vnni.txt": ("Intel(R) Xeon(R) CPU @ 2.50GHz", True, False),
    "intel-xeon-amx.txt": ("Intel(R) Xeon(R) Processor", True, True),
    "amd-epyc-zen3-avx2.txt": ("AMD EPYC", False, False),
    "amd-epyc-zen4-avx512.txt": ("AMD EPYC", True, True),
}


def kind(name: str) -> CpuInfo:
    return parse_cpuinfo((CPUINFO / name).read_text())


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_cpu_kind_is_read_with_the_facts_int8_and_bf16_depend_on(name):
    model, vnni, bf16 = KINDS[name]
    cpu = kind(name)
    assert (cpu.model, cpu.vnni, cpu.bf16) == (model, vnni, bf16)
    assert "avx2" in cpu.flags and CpuInfo.from_dict(cpu.to_dict()) == cpu


def test_this_cpu_reads_the_file_dnx_cpuinfo_names(monkeypatch):
    monkeypatch.setenv("DNX_CPUINFO", str(CPUINFO / "amd-epyc-zen3-avx2.txt"))
    assert this_cpu() == kind("amd-epyc-zen3-avx2.txt")
    monkeypatch.setenv("DNX_CPUINFO", str(CPUINFO / "nope.txt"))
    assert this_cpu().flags == ()  # unreadable: no flags claimed


def test_what_each_variant_needs_of_the_cpu():
    assert numerics_need("int8", "openvino", max_abs_weight=64) == NEEDS_NOTHING
    assert numerics_need("int8", "onnxruntime", max_abs_weight=127) == NEEDS_VNNI
    assert numerics_need("int8", "onnxruntime") == NEEDS_VNNI  # unknown range: taken as full range
    assert numerics_need("int8", "tensorrt", max_abs_weight=127) == NEEDS_NOTHING  # a GPU's arithmetic
    assert numerics_need("bf16", "openvino") == NEEDS_BF16
    assert numerics_need("fp32", "onnxruntime") == NEEDS_NOTHING


def _repository(**records):
    return Manifest.from_dict({"models": records}).models


def test_a_full_range_int8_repository_built_with_vnni_warns_only_on_a_cpu_without_it():
    vnni = kind("intel-xeon-amx.txt")
    models = _repository(
        m_int8_old={"runtime": "openvino", "precision": "int8", "target": "cpu",
                    "cpu": numerics_record("int8", "openvino", vnni, max_abs_weight=127)},
        m_int8={"runtime": "openvino", "precision": "int8", "target": "cpu",
                "cpu": numerics_record("int8", "openvino", vnni, max_abs_weight=64)},
        m_fp32={"runtime": "onnxruntime", "precision": "fp32", "target": "cpu"},
        m_bf16={"runtime": "openvino", "precision": "bf16", "target": "cpu",
                "cpu": numerics_record("bf16", "openvino", vnni)},
        m_trt={"runtime": "tensorrt", "precision": "int8", "target": "gpu"},
    )
    avx2 = unsafe_variants(models, kind("amd-epyc-zen3-avx2.txt"))
    assert len(avx2) == 2
    assert avx2[0].startswith("m_int8_old was built on Intel(R) Xeon(R) Processor and needs VNNI")
    assert "AMD EPYC (avx2) lacks" in avx2[0] and "re-export here" in avx2[0]
    assert avx2[1].startswith("m_bf16 was built on Intel(R) Xeon(R) Processor and needs native bf16")
    (vnni_no_bf16,) = unsafe_variants(models, kind("intel-xeon-avx512-vnni.txt"))
    assert vnni_no_bf16.startswith("m_bf16 was built on") and "Intel(R) Xeon(R) CPU @ 2.50GHz" in vnni_no_bf16
    assert unsafe_variants(models, vnni) == []


def test_an_older_repository_without_a_cpu_record_is_judged_by_its_precision():
    models = _repository(old={"runtime": "openvino", "precision": "int8", "target": "cpu"})
    (line,) = unsafe_variants(models, kind("amd-epyc-zen3-avx2.txt"))
    assert line.startswith("old was built on an unrecorded CPU and needs VNNI")
    assert unsafe_variants(models, kind("amd-epyc-zen4-avx512.txt")) == []


def test_the_saturation_model_finds_full_range_pairs_and_cannot_find_7_bit_ones():
    # u8 255 x s8 127 twice = 64770: beyond int16. Signed activations are shifted by 128 first.
    assert saturated_pairs(np.array([[255, 255]], np.uint8), np.array([[127, 127]], np.int8)) == (1, 1)
    assert saturated_pairs(np.array([[127, 127]], np.int8), np.array([[127, 127]], np.int8)) == (1, 1)
    assert saturated_pairs(np.array([[-128, -128]], np.int8), np.array([[127, 127]], np.int8)) == (0, 1)
    assert saturated_pairs(np.array([[255, 255]], np.uint8), np.array([[-128, -128]], np.int8)) == (1, 1)
    # The invariant: with |w| <= 64 no activation can saturate a pair.
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 256, (8, 64), dtype=np.int32).astype(np.uint8)
    acts[0] = 255
    weights = rng.integers(-64, 65, (32, 64)).astype(np.int8)
    weights[0] = 64
    assert saturated_pairs(acts, weights) == (0, 8 * 32 * 32)
    assert saturated_pairs(acts, (weights.astype(np.int16) * 2).clip(-128, 127).astype(np.int8))[0] > 0
