"""Writing the repository into the staging folder: configs, labels, model files, the bytes-in
ensemble and the manifest records. The stage runs through :func:`dnx.pipeline.engine.run_stage`
like every other; the swap into ``--out`` is :class:`~dnx.model_repository.layout.StagedRepository`'s.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from dnx.cpu import numerics_record, this_cpu
from dnx.exporter.torch_export import imagenet_labels
from dnx.hashing import sha256_file
from dnx.manifest import CONFIG_FILES, ModelRecord, new_manifest
from dnx.model_repository.ensemble import choose_variant, write_bytes_path
from dnx.model_repository.layout import LABELS_NAME, atomic_write_text, model_dir, tree_bytes
from dnx.model_repository.render import render_config
from dnx.ops.golden import write_golden
from dnx.pipeline.engine import Context, Stage, StageResult, Status
from dnx.pipeline.entries import int8_calibration, triton_config
from dnx.pipeline.options import DEFAULT_MAX_BATCH

WRITE_STAGE = "write_repository"


def write_models(ctx: Context, repo: Path) -> StageResult:
    """Write config.pbtxt, labels and model files of every model that passed (or --keep-failing)."""
    labels = "\n".join(imagenet_labels(ctx.spec)) + "\n"
    built_on = this_cpu()
    written = []
    for m in ctx.models:
        if m.parity and m.parity.get("passed") is False and not ctx.options.keep_failing:
            continue
        cfg = triton_config(m, ctx.spec, ctx.options.cuda_graphs)
        vdir = model_dir(repo, m.name)
        vdir.mkdir(parents=True, exist_ok=True)
        files = {}
        for fname, src in m.files.items():
            shutil.copyfile(src, vdir / fname)
            files[f"1/{fname}"] = sha256_file(vdir / fname)
        atomic_write_text(repo / m.name / "config.pbtxt", render_config(cfg))
        atomic_write_text(repo / m.name / LABELS_NAME, labels)
        ctx.manifest.models[m.name] = ModelRecord(
            name=m.name, runtime=m.runtime, precision=m.precision, backend=m.backend, platform=m.platform,
            target=ctx.target, files=files, opset=ctx.options.opset,
            config={"max_batch_size": cfg.max_batch_size, "instance_count": cfg.instance_count,
                    "instance_kind": cfg.instance_kind, "preferred_batch_sizes": cfg.preferred_batch_sizes,
                    "max_queue_delay_us": cfg.max_queue_delay_us, "parameters": cfg.parameters},
            parity=m.parity, extra={k: v for k, v in m.info.items() if v},
        )
        if ctx.target == "cpu":
            max_weight = (m.info.get("onnx") or {}).get("qdq", {}).get("max_abs_weight")
            ctx.manifest.models[m.name].extra["cpu"] = numerics_record(m.precision, m.runtime, built_on, max_weight)
        ctx.manifest.models[m.name].extra[CONFIG_FILES] = {
            rel: sha256_file(repo / m.name / rel) for rel in ("config.pbtxt", LABELS_NAME)}
        written.append(m.name)
    if ctx.parity is not None:
        ctx.manifest.parity = ctx.parity.to_dict()
    calib = int8_calibration(ctx.onnx_info)
    if calib:
        ctx.manifest.calibration = calib
    if not written:
        return StageResult(WRITE_STAGE, Status.FAILED, "no model was built; nothing to write")
    ensemble = write_ensemble(ctx, repo, labels)
    ctx.manifest.extra["golden"] = write_golden(ctx, repo)  # the answers `dnx check` expects
    if ensemble is None:
        return StageResult(WRITE_STAGE, Status.OK, "no variant passed its gate: no ensemble written",
                           {"models": len(written)})
    return StageResult(WRITE_STAGE, Status.OK, "",
                       {"models": len(written), "ensemble": f"{ensemble['name']} -> {ensemble['variant']}"})


def write_ensemble(ctx: Context, repo: Path, labels: str) -> dict | None:
    """Add the bytes-in path (preprocess model, softmax, ensemble over one variant) to ``repo``.

    Returns its manifest record, or None when only gate-failing variants were written
    (``--keep-failing``) and none was named with ``--serve-variant``.
    """
    models = ctx.manifest.models
    if not any(r.passed for r in models.values()) and not ctx.options.serve_variant:
        return None
    variant, why = choose_variant(models, ctx.options.serve_variant)
    record = write_bytes_path(repo, ctx.spec, variant, models[variant].max_batch_size, labels,
                              preprocess_max_batch=ctx.options.max_batch or DEFAULT_MAX_BATCH)
    record["why"] = why
    ctx.manifest.ensemble = record
    return record


def built_space(ctx: Context) -> tuple[Path, int, str]:
    """Where the write stage writes (the staging folder) and the bytes the built models take."""
    need = sum(tree_bytes(src) if Path(src).is_dir() else Path(src).stat().st_size
               for m in ctx.models for src in m.files.values())
    return ctx.staging, need, f"measured from the {len(ctx.models)} models this run built"


def write_repository(ctx: Context) -> StageResult:
    """The write stage: start the manifest, check the space the models need, write them into the staging folder."""
    ctx.manifest = new_manifest(ctx.spec, ctx.weights.to_dict(), ctx.options.record(ctx.target, ctx.target_reason))
    where, need, _ = built_space(ctx)
    if need and shutil.disk_usage(where).free < need:
        raise OSError(errno.ENOSPC, "No space left on device", str(where))
    return write_models(ctx, where)


WRITE = Stage(WRITE_STAGE, write_repository, space=built_space,
              skip_note="; the previous repository is unchanged")
