"""Object storage below serving and deploy: S3 locations and clients (:mod:`.s3`), reading a
published version (:mod:`.published`), and the local view of an ``s3://`` repository that
``dnx serve``, ``dnx validate`` and ``dnx deploy`` use (:mod:`.remote`). Uploading is
:mod:`dnx.deploy.publish`.
"""
