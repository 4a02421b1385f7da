"""A Python-based Triton backend named ``openvino``: OpenVINO on the CPU.

Triton loads ``<backend-dir>/openvino/model.py`` for any model whose ``config.pbtxt`` says
``backend: "openvino"`` when no ``libtriton_openvino.so`` is there. So the *unchanged*
repository that the NGC container serves with the real C++ openvino backend is served here
through this file, by the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel.

It follows the C++ backend (triton-inference-server/openvino_backend, ``src/openvino.cc``):

* model file ``<version>/model.xml`` (+ ``model.bin``), or ``default_model_filename``;
* parameters ``PERFORMANCE_HINT``, ``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``,
  ``NUM_STREAMS``, ``HINT_BF16``, ``CPU_EXTENSION_PATH``, ``RESHAPE_IO_LAYERS``,
  ``SKIP_OV_DYNAMIC_BATCHSIZE``, ``ENABLE_BATCH_PADDING``, validated the same way; plus
  ``INFERENCE_PRECISION_HINT`` (OpenVINO's property, e.g. ``f32``), which the C++ backend
  does not read. The mapping lives in ``dnx_backend_common`` (dnx/runtimes/backend_common.py,
  copied beside this file by the launcher), which dnx's in-process OpenVINO runner uses too;
* with ``max_batch_size > 0`` the model's batch is fixed to ``max_batch_size``; smaller
  batches are padded with zeros when ``ENABLE_BATCH_PADDING`` is YES, else every request
  must carry exactly ``max_batch_size`` items (the README's rule);
* one infer request per instance, ONE inference per batch the dynamic batcher forms; the
  C++ backend compiles the model once for all instances, so N instances with ``NUM_STREAMS``
  N overlap N inferences on one CPU's threads. Each instance is a process here, compiling its
  own copy with its share of the streams and threads (``openvino_process_share``). Overlap
  inside one instance (an ``AsyncInferQueue``) has nothing to overlap: Triton's Python backend
  waits for each ``execute`` of a non-decoupled model before it sends the next, and the
  requests of one ``execute`` already form one inference on the fixed batch;
* the requests of a batch are joined, and padded, in input buffers the instance allocates once
  and reuses (``BatchBuffers``): a fresh zero-filled batch per execute cost more than the copy.

Unlike the C++ backend, a request refused by that rule (or by OpenVINO) gets an error response
of its own and the other requests of the batch are answered. This file runs inside Triton's Python
stub and imports nothing from dnx.
"""

import os
import sys

import numpy as np
import openvino as ov
import triton_python_backend_utils as pb_utils

# The stub does not put this folder on sys.path; the launcher copies dnx_backend_common.py here.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnx_backend_common as common  # noqa: E402


class TritonPythonModel:
    """One compiled OpenVINO model and one infer request per model instance."""

    def initialize(self, args):
        self.model = m = common.BackendModel(args, pb_utils, "model.xml")
        self.padding = common.is_yes(m.params, "ENABLE_BATCH_PADDING")
        try:
            props = common.openvino_properties(m.params)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{m.name}: {exc}; fix config.pbtxt")
        core = ov.Core()
        if m.params.get("CPU_EXTENSION_PATH"):
            core.add_extension(m.params["CPU_EXTENSION_PATH"])
        model = core.read_model(m.path)
        m.check_names({n for port in model.inputs for n in port.get_names()},
                      {n for port in model.outputs for n in port.get_names()}, what="model")
        self._reshape(model, common.is_yes(m.params, "RESHAPE_IO_LAYERS"))
        # Each instance is a process here (one compiled model in the C++ backend): take its share.
        instances = common.instance_count(m.config)
        props = common.openvino_process_share(props, instances, os.cpu_count() or 1)
        if m.max_batch_size > 0:
            props["ALLOW_AUTO_BATCHING"] = "NO" if common.is_yes(m.params, "SKIP_OV_DYNAMIC_BATCHSIZE") else "YES"
        self.compiled = core.compile_model(model, "CPU", props)
        self.request = self.compiled.create_infer_request()
        # The compiled model's output ports in config order, looked up once rather than per batch.
        ports = {n: port for port in self.compiled.outputs for n in port.get_names()}
        self.output_ports = [ports[name] for name, _ in m.outputs]
        # Batches are joined and zero-padded to the fixed batch in buffers reused across executes.
        m.buffers.pad_to = max(0, m.max_batch_size)
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        pb_utils.Logger.log_info(
            f"{m.name}: OpenVINO {ov.get_version()} on CPU, precision {precision}, "
            f"streams {self.compiled.get_property('NUM_STREAMS')}, "
            f"threads {self.compiled.get_property('INFERENCE_NUM_THREADS')}, batch {m.max_batch_size or 'model'}, "
            f"one of {instances} instance processes"
        )

    def _reshape(self, model, reshape_io_layers):
        """Fix the batch to max_batch_size (as the C++ backend does); RESHAPE_IO_LAYERS applies config dims."""
        batch = self.model.max_batch_size
        if reshape_io_layers:
            lead = [-1] if batch > 0 else []
            model.reshape({name: ov.PartialShape(lead + dims) for name, dims in self.model.inputs})
        if batch > 0:
            for param in model.get_parameters():
                param.set_layout(ov.Layout("N..."))
            ov.set_batch(model, batch)

    def _check(self, batch):
        fixed = self.model.max_batch_size
        if fixed > 0 and not self.padding and batch != fixed:
            # The C++ backend's rule: each request must fill the fixed batch unless padding is on.
            raise ValueError(
                f"expected requests with batch size {fixed}, got {batch}; set parameter "
                "ENABLE_BATCH_PADDING to YES in config.pbtxt (or send batches of max_batch_size)"
            )

    def _run(self, feed, rows):
        """One OpenVINO inference on the whole (joined, padded) batch; outputs cut back to ``rows``."""
        # share_inputs: OpenVINO reads the (already contiguous, padded) arrays without copying them.
        results = self.request.infer({n: np.ascontiguousarray(a) for n, a in feed.items()}, share_inputs=True)
        keep = slice(0, rows) if self.model.max_batch_size > 0 else slice(None)
        return [results[port][keep] for port in self.output_ports]

    def execute(self, requests):
        return self.model.responses(requests, self._run, check=self._check)

    def finalize(self):
        self.request = None
        self.compiled = None
