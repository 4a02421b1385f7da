"""Untuned vs tuned in one run: models ``dnx tune`` rewrote are swept again with their previous config.

A model whose ``config.pbtxt.orig`` exists is loaded once more with that config through
``load_model(config=...)`` into the same server and swept the same way, so both figures come
from one server and one run; the repository's config is served again afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from dnx.model_repository.config_edit import ORIG_NAME, previous_config_json
from dnx.perf.results import best_row
from dnx.perf.served import ModelControl, ServedModel
from dnx.perf.sweep import SweepOptions, sweep_with_fill, tidy_rows


def untuned_configs(repository: Path, names: list[str]) -> dict[str, str]:
    """``{model: previous config as Triton JSON}`` for models that ``dnx tune`` rewrote."""
    out = {}
    for name in names:
        cfg = previous_config_json(Path(repository) / name)
        if cfg is not None:
            out[name] = cfg
    return out


def sweep_untuned(url: str, repository: Path, models: list[ServedModel], sweep_opts: SweepOptions, results: Path,
                  manifest, fill_cap: int = 32, memory=None) -> list[dict]:
    """Sweep each tuned model again with its ``config.pbtxt.orig`` loaded; the repository's config is
    served again afterwards. Rows are tidy rows (:func:`dnx.perf.sweep.tidy_rows`); ``memory``: a
    :class:`dnx.perf.sweep.memory.MemoryProbe` for their memory columns."""
    configs = untuned_configs(repository, [m.name for m in models])
    if not configs:
        return []
    with ModelControl(url) as control:
        try:
            for name, cfg in configs.items():
                control.load(name, cfg)
            served = [ServedModel(m.name, m.version, json.loads(configs[m.name])) for m in models if m.name in configs]
            swept = sweep_with_fill(served, sweep_opts, Path(results) / "untuned", fill_cap, memory=memory)
        finally:
            control.restore(repository, list(configs))
    return tidy_rows(swept, manifest)


def untuned_markdown(untuned: list[dict], served: list[dict]) -> list[str]:
    """The side-by-side table for BENCHMARKS.md (empty when nothing was tuned)."""
    if not untuned:
        return []
    lines = ["", "## Untuned vs tuned (same server, same run)", "",
             f"`dnx tune` rewrote these configs; the untuned figures load the previous `{ORIG_NAME}` through "
             "`load_model(config=...)` into the same server. Best batch-1 throughput over the swept concurrency.", "",
             "| model | untuned infer/s | at c | p99 ms | tuned infer/s | at c | p99 ms | tuned / untuned |",
             "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in untuned):
        u, t = best_row(untuned, model, batch=1), best_row(served, model, batch=1)
        if not u or not t:
            continue
        lines.append(f"| `{model}` | {u['throughput']:.1f} | {u['concurrency']} | {u['p99_ms']:.1f} | {t['throughput']:.1f} | "
                     f"{t['concurrency']} | {t['p99_ms']:.1f} | {t['throughput'] / u['throughput']:.2f}x |")
    return lines
