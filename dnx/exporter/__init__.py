"""Converters from PyTorch to ONNX, precision variants, OpenVINO and TensorRT."""
