"""Triton model repository: config rendering and on-disk layout."""
