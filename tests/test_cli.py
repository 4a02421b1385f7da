"""CLI-wide checks: every command has help, errors are one line, --help stays light."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from dnx.cli import COMMAND_MODULES, cli


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    names = cli.list_commands(None)
    assert "export" in names
    assert set(names) <= set(COMMAND_MODULES)
    for name in names:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: cli " + name in result.output or f"{name} [OPTIONS]" in result.output
        assert "Example" in result.output or "example" in result.output, name
        assert cli.get_command(None, name).help, name


def test_top_level_help_does_not_import_heavy_packages():
    code = (
        "import sys; from click.testing import CliRunner; from dnx.cli import cli;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0;"
        "[CliRunner().invoke(cli, [n, '--help']) for n in cli.list_commands(None)];"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'tensorrt', 'matplotlib', 'polygraphy') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_command_and_bad_flag():
    runner = CliRunner()
    r = runner.invoke(cli, ["frobnicate"])
    assert r.exit_code == 2 and "No such command" in r.output
    r = runner.invoke(cli, ["export", "--max-batch", "0"])
    assert r.exit_code == 2 and "--max-batch" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["export", "--precision", "fp8"])
    assert r.exit_code == 2 and "fp8" in r.output


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "dnx, version" in r.output


def test_command_reference_is_current():
    root = __import__("pathlib").Path(__file__).parents[1]
    r = subprocess.run([sys.executable, str(root / "scripts" / "cli_reference.py"), "--check"], cwd=root)
    assert r.returncode == 0, "docs/CLI.md is stale: run python scripts/cli_reference.py"
