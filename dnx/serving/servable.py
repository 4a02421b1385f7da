"""Which models of a repository a server mode can serve here, and why not the others.

Used by :class:`dnx.serving.server.TritonServer` before it launches, and by ``dnx deploy``
(:mod:`dnx.deploy.kubernetes`) to decide what a cluster's Triton loads; it starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dnx.kinds import BACKEND_SPELLINGS, Backend
from dnx.model_repository.render import parse_config_file

BACKENDS_SOURCE = Path(__file__).parent / "backends"
TENSORRT = tuple(n for n, k in BACKEND_SPELLINGS.items() if k == Backend.TENSORRT_PLAN) + (Backend.TENSORRT_PLAN.value,)


@dataclass(frozen=True)
class ModelChoice:
    """One model folder of the repository and whether this server loads it."""

    name: str
    backend: str  # backend or platform as written in config.pbtxt
    load: bool
    reason: str = ""  # why it is skipped


def local_backends() -> list[str]:
    """Names of the Python-based backends dnx ships (``backends/<name>/model.py``)."""
    return sorted(p.parent.name for p in BACKENDS_SOURCE.glob("*/model.py"))


def _has_version(model_dir: Path) -> bool:
    return any(p.is_dir() and p.name.isdigit() and any(p.iterdir()) for p in model_dir.iterdir())


def choose_models(repository: str | Path, *, mode: str, gpu: bool) -> list[ModelChoice]:
    """Decide, for each model folder of ``repository``, whether ``mode`` can serve it here.

    A ``config.pbtxt`` that does not parse raises :class:`~dnx.errors.InputError` naming the file
    and line: serving the other models would hide the user's typo behind a skipped model.
    """
    repo = Path(repository)
    choices = []
    steps: dict[str, list[str]] = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cfg_path = folder / "config.pbtxt"
        if not cfg_path.is_file():
            choices.append(ModelChoice(folder.name, "?", False, "no config.pbtxt"))
            continue
        cfg = parse_config_file(cfg_path)  # a typo in a user's edit is theirs: path and line, not a skip
        name = folder.name  # Triton names a model after its folder
        kind = cfg.backend or cfg.platform
        backend = {"onnxruntime_onnx": "onnxruntime"}.get(kind, kind)
        gpu_only = any(g.kind == g.KIND_GPU for g in cfg.instance_group)
        reason = ""
        if not _has_version(folder):
            reason = "no version folder with a model file (e.g. 1/model.onnx); re-export it"
        elif backend in TENSORRT and not gpu:
            reason = "TensorRT plan needs an NVIDIA GPU and the NGC tritonserver image (dnx serve --mode docker on a GPU machine)"
        elif gpu_only and not gpu:
            reason = "instance_group asks for KIND_GPU but no GPU is visible"
        elif mode == "local" and backend in TENSORRT:
            reason = "local mode has no TensorRT backend; use --mode docker"
        elif mode == "local" and backend not in local_backends() + ["python", "ensemble"]:
            reason = f"local mode has no {backend!r} backend (it serves {', '.join(local_backends())}); use --mode docker"
        choices.append(ModelChoice(name, backend or "?", not reason, reason))
        if backend == "ensemble":
            steps[name] = [st.model_name for st in cfg.ensemble_scheduling.step]
    return _skip_broken_ensembles(choices, steps)


def _skip_broken_ensembles(choices: list[ModelChoice], steps: dict[str, list[str]]) -> list[ModelChoice]:
    """An ensemble is served only when every model of its steps is (e.g. not over a skipped plan)."""
    loads = {c.name: c for c in choices}
    out = []
    for c in choices:
        missing = [m for m in steps.get(c.name, []) if not (m in loads and loads[m].load)]
        if c.load and missing:
            why = loads[missing[0]].reason if missing[0] in loads else "not in the repository"
            c = ModelChoice(c.name, c.backend, False, f"its step {missing[0]} is not served ({why}); "
                            "re-export with --serve-variant naming a variant this server can load")
        out.append(c)
    return out
