"""The ``dnx`` command line. Commands live in :mod:`dnx.commands`, one module each.

User errors (:class:`dnx.errors.DnxError`) are caught here, in one place, and printed as
``Error: <message>`` with exit code 1 and no traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from dnx import __version__
from dnx.errors import DnxError
from dnx.signals import Interrupted, terminating

# module name in dnx.commands -> attribute holding the click command
COMMAND_MODULES = ("export", "serve", "infer", "validate", "perf", "bench", "tune", "publish", "deploy", "check")


class _UserError(click.ClickException):
    exit_code = 1


class _Group(click.Group):
    """Loads command modules lazily so ``dnx --help`` never imports torch."""

    def list_commands(self, ctx):
        return [m for m in COMMAND_MODULES if importlib.util.find_spec(f"dnx.commands.{m}")]

    def invoke(self, ctx):
        # The one place user errors become "Error: ..." lines (also under CliRunner), and
        # SIGINT/SIGTERM become one "Error: interrupted by ..." line after cleanup ran.
        try:
            with terminating(restore=False):
                return super().invoke(ctx)
        except DnxError as exc:
            raise _UserError(str(exc)) from None
        except Interrupted as exc:
            err = _UserError(str(exc))
            err.exit_code = exc.exit_code
            raise err from None

    def get_command(self, ctx, name):
        if name not in COMMAND_MODULES or not importlib.util.find_spec(f"dnx.commands.{name}"):
            return None
        return importlib.import_module(f"dnx.commands.{name}").command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dnx")
def cli():
    """dnx: DenseNet-121 (or another torchvision classifier) to a production Triton model repository.

    \b
    Typical use:
      dnx export --precision int8        # --calib-dir your-photos/ for production
      make serve
      dnx infer cat.jpg --top-k 5
      dnx perf --concurrency 1:16
      dnx tune                           # fastest served configs on this machine
    """


def main(argv=None):
    """Console entry point."""
    try:
        return cli.main(args=argv, prog_name="dnx")
    except SystemExit as exc:
        exit_past_loadgen(exc.code)
        raise


def exit_past_loadgen(code) -> None:
    """End the process at once, output flushed, when MLPerf LoadGen was loaded.

    LoadGen's native state faults while the interpreter tears down (the kernel logged general
    protection faults inside mlperf_loadgen's shared library as `dnx perf --scenario` exited), which
    turned a finished run into exit 139. Nothing of dnx's is left to run then: results are written.
    """
    if "mlperf_loadgen" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
