"""The pure perf_analyzer command-line builder, flag parsing and environment."""

from __future__ import annotations

import os
import subprocess

import pytest

from dnx.errors import InputError
from dnx.perf.analyzer import (
    build_argv, check_shared_memory, cudart_lib_dir, find_perf_analyzer, is_local_host, perf_analyzer_env, shell_line,
)
from dnx.perf.analyzer.argv import url_host
from dnx.perf.levels import ConcurrencyRange
from dnx.perf.served import default_metrics_url, variant_of
from dnx.perf.sweep import SweepOptions, compare


def test_build_argv_minimal_and_full():
    argv = build_argv("/bin/pa", "densenet121_onnx", url="127.0.0.1:8001", protocol="grpc", batch_size=4,
                      concurrency=ConcurrencyRange(1, 16, 2), measurement_interval_ms=5000, csv_path="out.csv")
    assert argv == ["/bin/pa", "-m", "densenet121_onnx", "-u", "127.0.0.1:8001", "-i", "grpc", "-b", "4",
                    "--concurrency-range", "1:16:2", "--measurement-interval", "5000", "-f", "out.csv"]
    argv = build_argv("pa", "m", url="h:8000", protocol="http", batch_size=1, concurrency=ConcurrencyRange(2, 2),
                      measurement_interval_ms=1000, csv_path="o.csv", percentile=99, stability_percentage=12.5,
                      max_trials=4, collect_metrics=True, metrics_url="h:8002/metrics", verbose_csv=True,
                      input_data="/data")
    assert argv == ["pa", "-m", "m", "-u", "h:8000", "-i", "http", "-b", "1", "--concurrency-range", "2:2:1",
                    "--measurement-interval", "1000", "--percentile", "99", "--stability-percentage", "12.5",
                    "--max-trials", "4", "--input-data", "/data", "--collect-metrics", "--metrics-url",
                    "h:8002/metrics", "--verbose-csv", "-f", "o.csv"]


@pytest.mark.parametrize("text,levels", [("1:16", list(range(1, 17))), ("1:16:4", [1, 5, 9, 13]), ("3", [3]),
                                         ("2:2", [2]), (" 1:3 ", [1, 2, 3])])
def test_concurrency_range(text, levels):
    assert ConcurrencyRange.parse(text).levels() == levels


@pytest.mark.parametrize("text,match", [("5:1", "end 1 is below start 5"), ("0:4", ">= 1"), ("1:4:0", ">= 1"),
                                        ("a:b", "not start:end"), ("1:2:3:4", "not start:end"), ("", "not start:end")])
def test_concurrency_range_errors_are_one_line(text, match):
    with pytest.raises(InputError, match=match) as exc:
        ConcurrencyRange.parse(text)
    assert "\n" not in str(exc.value) and "e.g. 1:16" in str(exc.value)


@pytest.mark.parametrize("kw,match", [({"protocol": "udp"}, "grpc or http"), ({"batch_sizes": (0,)}, "batch-size"),
                                      ({"measurement_interval_ms": 10}, "too short"), ({"percentile": 100}, "1..99"),
                                      ({"stability_percentage": 0}, "> 0")])
def test_sweep_options_check(kw, match):
    with pytest.raises(InputError, match=match):
        SweepOptions(**kw).check()


def test_the_installed_perf_analyzer_runs_with_the_environment_we_build():
    binary = find_perf_analyzer()
    assert os.access(binary, os.X_OK)
    env = perf_analyzer_env({"LD_LIBRARY_PATH": "/x"})
    assert env["LD_LIBRARY_PATH"].split(":") == [str(cudart_lib_dir()), "/x"]
    assert (cudart_lib_dir() / "libcudart.so.12").is_file()
    out = subprocess.run([str(binary), "--help"], env=perf_analyzer_env(), capture_output=True, text=True, timeout=30)
    assert "--concurrency-range" in out.stdout + out.stderr
    line = shell_line([str(binary), "-m", "a b"], env)
    assert line.startswith("LD_LIBRARY_PATH=") and line.endswith("-m 'a b'")


def test_default_metrics_url():
    assert default_metrics_url("127.0.0.1:8001") == "127.0.0.1:8002/metrics"
    assert default_metrics_url("myhost") == "myhost:8002/metrics"


def test_shared_memory_flag_only_when_asked():
    kw = dict(url="127.0.0.1:8001", protocol="grpc", batch_size=1, concurrency=ConcurrencyRange(1, 1),
              measurement_interval_ms=1000, csv_path="o.csv")
    assert "--shared-memory" not in build_argv("pa", "m", **kw)
    assert "--shared-memory" not in build_argv("pa", "m", shared_memory="none", **kw)
    argv = build_argv("pa", "m", shared_memory="system", **kw)
    assert argv[argv.index("--shared-memory") + 1] == "system" and argv[-2:] == ["-f", "o.csv"]


@pytest.mark.parametrize("url,host", [("127.0.0.1:8001", "127.0.0.1"), ("[::1]:8001", "::1"), ("localhost", "localhost"),
                                      ("http://10.0.0.5:8002/metrics", "10.0.0.5"), ("triton.prod:8001", "triton.prod")])
def test_url_host(url, host):
    assert url_host(url) == host


def test_system_shared_memory_only_for_a_server_on_this_machine():
    for url in ("127.0.0.1:8001", "127.0.0.2:1", "localhost:8001", "[::1]:8001"):
        check_shared_memory("system", url)
        assert is_local_host(url_host(url))
    for url in ("10.0.0.5:8001", "triton.prod.example:8001", "[2001:db8::1]:8001"):
        check_shared_memory("none", url)  # tensors in the messages: any server
        with pytest.raises(InputError) as exc:
            check_shared_memory("system", url)
        msg = str(exc.value)
        assert "\n" not in msg and url_host(url) in msg and "--shared-memory none" in msg
    with pytest.raises(InputError, match="use none or system"):
        check_shared_memory("cuda", "127.0.0.1:8001")


@pytest.mark.parametrize("name,expected", [
    ("densenet121_onnx", ("fp32", "onnxruntime")), ("densenet121_onnx_int8", ("int8", "onnxruntime")),
    ("densenet121_openvino_bf16", ("bf16", "openvino")), ("densenet121_trt_fp16", ("fp16", "tensorrt")),
    ("resnet", ("?", "?")),
])
def test_variant_from_name(name, expected):
    assert variant_of(name) == expected


def test_variant_from_manifest_wins():
    manifest = {"models": {"custom": {"precision": "int8", "runtime": "openvino"}}}
    assert variant_of("custom", manifest) == ("int8", "openvino")


def test_compare_best_and_within_budget():
    def row(model, c, thr, p99):
        return {"model": model, "precision": "fp32", "runtime": "onnxruntime", "batch": 1, "concurrency": c,
                "throughput": thr, "p50_ms": p99 / 2, "p99_ms": p99, "stable": True}
    rows = [row("a", 1, 50.0, 20.0), row("a", 2, 60.0, 45.0), row("a", 4, 62.0, 90.0), row("b", 1, 100.0, 60.0)]
    out = compare(rows, latency_budget_ms=50)
    assert [e["model"] for e in out] == ["b", "a"]  # sorted by best throughput
    assert out[1]["best"]["concurrency"] == 4 and out[1]["within_budget"]["concurrency"] == 2
    assert out[0]["within_budget"] is None
    assert compare(rows)[1]["within_budget"] is None


def test_served_model_summary_normalises_grpc_and_http_json():
    from dnx.perf.served import ServedModel

    grpc = {"max_batch_size": 8, "backend": "onnxruntime", "dynamic_batching": {"preferred_batch_size": [4]},
            "instance_group": [{"count": 2, "kind": "KIND_GPU"}], "input": [{"name": "input", "dims": ["3", "224", "224"]}],
            "parameters": {"intra_op_thread_count": {"string_value": "2"}}}
    http = dict(grpc, dynamic_batching={"preferred_batch_size": [4], "max_queue_delay_microseconds": 0,
                                        "preserve_ordering": False})
    a, b = ServedModel("m", "1", grpc), ServedModel("m", "1", http)
    assert a.summary() == b.summary()
    assert a.summary()["dynamic_batching"] == {"preferred_batch_size": [4], "max_queue_delay_microseconds": 0}
    assert a.summary()["parameters"] == {"intra_op_thread_count": "2"}
    assert a.on_gpu and a.max_batch_size == 8 and a.variable_inputs == []
    tiny = ServedModel("t", "1", {"input": [{"name": "x", "dims": ["-1"]}], "instance_group": [{"kind": "KIND_CPU"}]})
    assert tiny.variable_inputs == ["x"] and not tiny.on_gpu and tiny.summary()["dynamic_batching"] is None


def test_variant_of_the_ensemble_names_its_variant():
    manifest = {"models": {"resnet50_openvino_int8": {"precision": "int8", "runtime": "openvino"}},
                "ensemble": {"name": "resnet50", "variant": "resnet50_openvino_int8"}}
    assert variant_of("resnet50", manifest) == ("int8", "ensemble(openvino)")
    assert variant_of("resnet50", None) == ("?", "?")
