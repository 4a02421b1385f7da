"""A Python-based Triton backend named ``onnxruntime``: ONNX Runtime on the CPU.

Triton loads ``<backend-dir>/onnxruntime/model.py`` for any model whose ``config.pbtxt``
says ``backend: "onnxruntime"`` when no ``libtriton_onnxruntime.so`` is there. So the
*unchanged* repository that the NGC container serves with the real C++ backend is served
here through this file, by the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel.

What it honours from the config: input/output names and data types, ``max_batch_size``,
``default_model_filename``, and the C++ backend's parameters with the same meaning
(``intra_op_thread_count``, ``inter_op_thread_count``, ``execution_mode``,
``enable_mem_arena`` (older spelling ``enable_mem_area``), ``enable_mem_pattern``,
``memory.enable_memory_arena_shrinkage``) plus ``optimization { graph { level } }``, mapped by
``dnx_backend_common`` (dnx/runtimes/backend_common.py, copied beside this file by the launcher:
dnx's in-process runners use the same mapping). Every batch the dynamic batcher hands to
:meth:`TritonPythonModel.execute` becomes ONE ``InferenceSession.run`` (several requests are
joined in an input buffer the instance reuses; a lone request's array is passed as it arrives,
from the stub's shared memory, without a copy); when ONNX Runtime refuses a group of requests,
only those get the error and the others are answered.

This file runs inside Triton's Python stub and imports nothing from dnx.
"""

import os
import sys

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The stub does not put this folder on sys.path; the launcher copies dnx_backend_common.py here.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnx_backend_common as common  # noqa: E402


class TritonPythonModel:
    """ONNX Runtime CPU session serving one model instance."""

    def initialize(self, args):
        self.model = common.BackendModel(args, pb_utils, "model.onnx")
        level = self.model.config.get("optimization", {}).get("graph", {}).get("level", 0)
        self.session = ort.InferenceSession(
            self.model.path, sess_options=common.ort_session_options(self.model.params, level),
            providers=["CPUExecutionProvider"],
        )
        self.run_options = common.ort_run_options(self.model.params)
        self.model.check_names({i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()})
        self.output_names = [n for n, _ in self.model.outputs]

    def _run(self, feed, rows):
        try:
            return self.session.run(self.output_names, feed, self.run_options)
        except Exception as exc:  # noqa: BLE001 - reported to the clients of this group
            raise RuntimeError(f"ONNX Runtime failed: {exc}") from None

    def execute(self, requests):
        return self.model.responses(requests, self._run)

    def finalize(self):
        self.session = None
