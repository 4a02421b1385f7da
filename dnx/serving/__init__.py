"""Serving: launch tritonserver (local binary or NGC container) and query it.

* :mod:`dnx.serving.server`: :class:`~dnx.serving.server.TritonServer` and :func:`~dnx.serving.server.serve`.
* :mod:`dnx.serving.client`: :func:`~dnx.serving.client.classify` and :func:`~dnx.serving.client.infer_logits`.
* :mod:`dnx.serving.docker`: the NGC image tag and ``docker run`` command line.
* ``backends/<name>/model.py``: Python-based Triton backends for local CPU serving.
"""
