"""Which models a server mode can serve (dnx.serving.servable), without starting a server."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.errors import InputError
from dnx.serving.servable import choose_models
from tests.fixtures_server import PLAN_MODEL, TINY_MODEL, add_test_models


def _typo(repo: Path) -> Path:
    """The user's edit of the tiny model's config: line 3 misspells max_batch_size."""
    cfg = repo / TINY_MODEL / "config.pbtxt"
    lines = cfg.read_text().splitlines()
    assert lines[2] == "max_batch_size: 4"
    lines[2] = "max_batch_sise: 4"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_local_mode_serves_onnx_and_skips_plans_with_why(tmp_path):
    add_test_models(tmp_path)
    choices = {c.name: c for c in choose_models(tmp_path, mode="local", gpu=False)}
    assert choices[TINY_MODEL].load and choices[TINY_MODEL].backend == "onnxruntime"
    assert not choices[PLAN_MODEL].load and "TensorRT plan needs an NVIDIA GPU" in choices[PLAN_MODEL].reason


def test_a_config_that_does_not_parse_is_the_users_file_and_line(tmp_path):
    add_test_models(tmp_path)
    cfg = _typo(tmp_path)
    with pytest.raises(InputError) as exc:
        choose_models(tmp_path, mode="local", gpu=False)
    assert str(exc.value) == (f'{cfg}:3: Message type "inference.ModelConfig" has no field named "max_batch_sise"; '
                              "fix the file or re-export")


def test_dnx_serve_reports_the_typo_as_the_users_not_a_dnx_bug(tmp_path):
    add_test_models(tmp_path)
    cfg = _typo(tmp_path)
    r = CliRunner().invoke(cli, ["serve", "--repository", str(tmp_path), "--mode", "local", "--grpc-port", "0",
                                 "--http-port", "0", "--metrics-port", "0"])
    assert r.exit_code == 1
    assert r.output == (f'Error: {cfg}:3: Message type "inference.ModelConfig" has no field named "max_batch_sise"; '
                        "fix the file or re-export\n")
    assert "dnx bug" not in r.output


def test_a_config_that_is_not_text_is_the_users_file_too(tmp_path):
    add_test_models(tmp_path)
    cfg = tmp_path / TINY_MODEL / "config.pbtxt"
    cfg.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(InputError, match=rf"^{cfg}: cannot be read as text .*; fix the file or re-export$"):
        choose_models(tmp_path, mode="docker", gpu=False)
