"""PyTorch eager on the CPU: the parity reference and the bench baseline."""

from __future__ import annotations

import numpy as np

from dnx._lazy import lazy_import
from dnx.runtimes.callable import callable_runner
from dnx.spec import DEFAULT_MODEL, ModelSpec


def forward_fn(module):
    """``batch -> logits`` of ``module`` in FP32 eval mode under ``inference_mode``."""
    torch = lazy_import("torch")
    module = module.float().eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return run


def runner(module, name: str = "pytorch-fp32", spec: ModelSpec = DEFAULT_MODEL):
    """Polygraphy runner of a PyTorch module (see :func:`forward_fn`)."""
    return callable_runner(lambda: forward_fn(module), name, spec)
