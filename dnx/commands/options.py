"""Click option bundles for the flags ``dnx perf``, ``dnx bench`` and ``dnx tune`` share.

Each bundle is a decorator factory taking the command's own default and help text, so the
flags are declared once and every command's ``--help`` stays as it was (the README command
reference check proves it). Bundles apply their options in ``--help`` order.
"""

from __future__ import annotations

from pathlib import Path

import click


def _compose(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def repository_option(help: str, path_type=Path, default=Path("model_repository")):
    """``--repository``: the model repository folder (or what ``path_type`` allows)."""
    return click.option("--repository", type=click.Path(path_type=path_type), default=default, show_default=True,
                        help=help)


def models_option(help: str, multiple: bool = False):
    """``--models``: a comma list (perf, bench) or a repeated flag (tune)."""
    return click.option("--models", multiple=multiple, help=help)


def concurrency_option(default: str, help: str):
    """``--concurrency``: the levels to measure, as the command spells them."""
    return click.option("--concurrency", default=default, show_default=True, help=help)


def window_options(*, interval_default: int, interval_help: str, interval_type=int,
                   stability_help: str, stability_default: float | None = None,
                   max_trials_help: str, max_trials_type=click.IntRange(min=3), max_trials_default: int | None = 6,
                   percentile: bool = False):
    """``--measurement-interval``, [``--percentile``,] ``--stability-percentage``, ``--max-trials``."""
    stability = ({"default": stability_default, "show_default": True} if stability_default is not None else {})
    trials = ({"default": max_trials_default, "show_default": True} if max_trials_default is not None else {})
    return _compose(
        click.option("--measurement-interval", type=interval_type, default=interval_default, show_default=True,
                     help=interval_help),
        *([click.option("--percentile", type=int, help="Stabilize on this latency percentile instead of the average.")]
          if percentile else []),
        click.option("--stability-percentage", type=float, help=stability_help, **stability),
        click.option("--max-trials", type=max_trials_type, help=max_trials_help, **trials),
    )


def retries_option(help: str):
    """``--retries``: retries of an unstable level with a longer window."""
    return click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True, help=help)


def latency_budget_option(help: str):
    """``--latency-budget-ms``."""
    return click.option("--latency-budget-ms", type=float, help=help)


def quiet_option(help: str = "No progress bar."):
    """``--quiet`` / ``-q``."""
    return click.option("--quiet", "-q", is_flag=True, help=help)


def shared_memory_option():
    """``--shared-memory none|system``: perf_analyzer's, for ``dnx perf``, ``dnx tune`` and ``dnx bench``."""
    return click.option("--shared-memory", type=click.Choice(["none", "system"]), default="none", show_default=True,
                        help="perf_analyzer --shared-memory: none sends tensors in the gRPC/HTTP messages; system "
                             "passes them through system shared memory (a server on this machine only).")
