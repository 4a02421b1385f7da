"""The export pipeline as data: a list of stages, each returning OK / FAILED / SKIPPED.

``export(options)`` runs the stages in order inside a staging folder beside the target
repository and swaps it into place only when every stage that ran succeeded, so a failed
or interrupted run leaves the previous repository untouched.

* :mod:`.options` - :class:`ExportOptions` and the target's default precisions and runtimes;
* :mod:`.entries` - the models being built (:class:`ModelEntry`) and their serving defaults;
* :mod:`.engine` - :class:`Stage`, :class:`StageResult`, :class:`Context` and :func:`run_stage`, the one error wrapper;
* :mod:`.stages` - torch → ONNX (+ parity with PyTorch) → FP16 / INT8 → OpenVINO → TensorRT → parity gates;
* :mod:`.write` - configs, files, ensemble and manifest records into the staging folder (a stage too);
* :mod:`.run` - :func:`export`: the loop, the lock, the swap.
"""

from dnx.pipeline.engine import Context, Stage, StageResult, Status, disk_full_reason, run_stage
from dnx.pipeline.entries import (SERVING_DEFAULTS, ModelEntry, ServingDefaults, openvino_entry, triton_config,
                                  with_serving_defaults)
from dnx.pipeline.options import (DEFAULT_MAX_BATCH, ExportOptions, default_precisions, default_runtimes,
                                  resolve_target)
from dnx.pipeline.run import ExportResult, export
from dnx.pipeline.stages import STAGES
from dnx.pipeline.write import WRITE_STAGE, write_ensemble, write_models

__all__ = [
    "DEFAULT_MAX_BATCH", "SERVING_DEFAULTS", "STAGES", "WRITE_STAGE", "Context", "ExportOptions", "ExportResult",
    "ModelEntry", "ServingDefaults", "Stage", "StageResult", "Status", "default_precisions", "default_runtimes",
    "disk_full_reason", "export", "openvino_entry", "resolve_target", "run_stage", "triton_config",
    "with_serving_defaults", "write_ensemble", "write_models",
]
