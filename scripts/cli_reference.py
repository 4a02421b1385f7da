"""Regenerate the command reference in docs/CLI.md from the commands' --help text.

    python scripts/cli_reference.py          # rewrite docs/CLI.md in place
    python scripts/cli_reference.py --check  # exit 1 if docs/CLI.md is out of date (used by tests)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from dnx.cli import cli

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"
BEGIN, END = "<!-- cli-reference:begin -->", "<!-- cli-reference:end -->"


def reference() -> str:
    """The markdown block: `dnx --help` and each command's --help."""
    runner = CliRunner()
    parts = []
    commands = []
    for name in cli.list_commands(None):
        commands.append([name])
        group = cli.get_command(None, name)
        if isinstance(group, click.Group):  # e.g. `dnx deploy kubernetes`
            commands += [[name, sub] for sub in group.list_commands(None)]
    for args in [[]] + commands:
        text = runner.invoke(cli, [*args, "--help"], prog_name="dnx", terminal_width=100).output
        title = "dnx " + " ".join(args) if args else "dnx"
        parts.append(f"### `{title.strip()}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def render(doc: str) -> str:
    """``doc`` with the block between the markers replaced."""
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{reference()}\n{END}{tail}"


if __name__ == "__main__":
    current = REFERENCE.read_text()
    new = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if new == current else 1)
    REFERENCE.write_text(new)
