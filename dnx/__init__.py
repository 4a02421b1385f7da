"""dnx: DenseNet-121 to a production Triton Inference Server model repository."""

__version__ = "0.1.0"
