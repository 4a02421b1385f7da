"""A Polygraphy runner around a plain function, how OpenVINO, PyTorch and a served model become runners.

Its own module so the runtime modules (:mod:`.openvino`, :mod:`.torch`) and the package that
chooses between them (:mod:`dnx.runtimes`) all import it from below, without a circle.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from dnx._lazy import lazy_import
from dnx.spec import DEFAULT_MODEL, ModelSpec

_CALLABLE_RUNNER_CLASS = None


def callable_runner(load: Callable[[], Callable[[np.ndarray], np.ndarray]], name: str, spec: ModelSpec = DEFAULT_MODEL):
    """A Polygraphy runner whose ``activate`` calls ``load()`` for a function ``batch -> outputs``.

    How OpenVINO, PyTorch and a served model become Polygraphy runners; ``load`` runs on
    activation, so a runner costs nothing until the Comparator uses it.
    """
    global _CALLABLE_RUNNER_CLASS
    if _CALLABLE_RUNNER_CLASS is None:
        base = lazy_import("polygraphy.backend.base")
        common = lazy_import("polygraphy.common")

        class CallableRunner(base.BaseRunner):
            """Runs the function ``load()`` returned on the input batch."""

            def __init__(self, load, name, spec):
                super().__init__(name=name, prefix="callable-runner")
                self._load, self._fn, self._spec = load, None, spec

            def activate_impl(self):
                self._fn = self._load()

            def deactivate_impl(self):
                self._fn = None

            def get_input_metadata_impl(self):
                meta = common.TensorMetadata()
                meta.add(self._spec.input_name, dtype=np.float32, shape=(-1, *self._spec.input_shape))
                return meta

            def infer_impl(self, feed_dict):
                start = time.perf_counter()
                out = np.asarray(self._fn(feed_dict[self._spec.input_name]))
                self.inference_time = time.perf_counter() - start
                return {self._spec.output_name: out}

        _CALLABLE_RUNNER_CLASS = CallableRunner
    return _CALLABLE_RUNNER_CLASS(load, name, spec)
