"""``dnx publish`` under faults at its edge: the connection cut, or a signal, right before the pointer PUT.

The S3 server is moto's real server over TCP (tests/deploy/conftest.py). ``dnx publish`` runs as a
real process and talks to it through :class:`InspectingProxy`, which reads the requests passing
through and, at the PUT of a chosen key, either cuts every connection (the server gone) or holds
the request (the publisher waits on it) so a signal lands exactly there. Readers resolve the
pointer the way ``dnx serve --repository s3://...`` does (:func:`dnx.storage.remote.local_copy`)
and must get the previous version, complete and byte for byte; publishing again completes the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import threading
import uuid
from pathlib import Path

import pytest

from dnx.deploy.publish import publish, scan_repository
from dnx.storage.published import INDEX_NAME, POINTER_NAME, resolve
from dnx.storage.remote import local_copy
from tests.deploy.conftest import TcpProxy, moto_server
from tests.faults.conftest import finish, one_error_line, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.s3]

POINTER_PUT = re.compile(rb"PUT [^ ]*/" + re.escape(POINTER_NAME.encode()) + rb"[ ?]")
FIRST_MODEL_PUT = re.compile(rb"PUT [^ ]*/versions/[0-9a-f]+/tiny_a/1/model\.onnx[ ?]")


class InspectingProxy(TcpProxy):
    """Forwards 127.0.0.1:<port> to the S3 server; on the first request matching ``trigger``,
    ``cut`` closes every connection and the listener (nothing of that request reaches the server)
    and ``hold`` stops forwarding that connection (the request never arrives; the client waits)."""

    def __init__(self, target_port: int, trigger: re.Pattern, action: str):
        self.trigger, self.action = trigger, action
        self.triggered = threading.Event()
        super().__init__(target_port)

    def _pipe(self, src, dst, request: bool):
        tail = b""
        try:
            while data := src.recv(65536):
                if request and not self.triggered.is_set():
                    seen, tail = tail + data, (tail + data)[-512:]  # a request line split across two reads
                    if self.trigger.search(seen):
                        self.triggered.set()
                        if self.action == "cut":
                            self.close()
                        return  # hold: the request goes no further; the connection stays open
                dst.sendall(data)
        except OSError:
            pass
        if not (request and self.triggered.is_set() and self.action == "hold"):
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    close = TcpProxy.cut


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def _write_repo(repo: Path, config_batch: int, weights_seed: int) -> None:
    """A small repository that `dnx publish` accepts: two models, labels, a manifest with the files' sha256."""
    manifest = {"model": "densenet121", "models": {}}
    for name in ("tiny_a", "tiny_b"):
        model = repo / name / "1" / "model.onnx"
        model.parent.mkdir(parents=True, exist_ok=True)
        # 3 MiB of seeded bytes: large enough that the upload is several requests, small enough to be quick.
        model.write_bytes(hashlib.sha256(f"{name}{weights_seed}".encode()).digest() * (3 * 2 ** 20 // 32))
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {config_batch}\n')
        (repo / name / "labels.txt").write_text("cat\ndog\n")
        manifest["models"][name] = {
            "files": {"1/model.onnx": hashlib.sha256(model.read_bytes()).hexdigest()},
            "config_files": {f: hashlib.sha256((repo / name / f).read_bytes()).hexdigest()
                             for f in ("config.pbtxt", "labels.txt")}}
    (repo / "dnx-manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _files(repo: Path) -> dict[str, str]:
    return {f.path: f.sha256 for f in scan_repository(repo)}


@pytest.fixture
def published(s3, tmp_path, monkeypatch):
    """``(uri, repo, v1 id, v1 files, env)``: version 1 published, then the local repository changed into version 2."""
    uri = f"s3://{s3.bucket}/models/{uuid.uuid4().hex[:8]}"
    repo = tmp_path / "model_repository"
    _write_repo(repo, 8, 1)
    env = {**s3.env(), "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    v1 = publish(repo, uri, endpoint_url=s3.url, progress=False).plan.version
    v1_files = _files(repo)
    _write_repo(repo, 4, 2)  # every model file and config changes
    return uri, repo, v1, v1_files, env


def _reader_sees(s3, uri: str, files: dict[str, str], where: Path) -> None:
    """What `dnx serve --repository s3://...` would fetch: exactly ``files``, verified."""
    copy = local_copy(uri, endpoint_url=s3.url, cache_dir=where)
    assert _files(copy) == files


def _keys(s3, prefix: str) -> set[str]:
    c = s3.client()
    return {o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
            for o in page.get("Contents", [])}


def test_connection_cut_before_the_pointer_put(dnx, s3, published, tmp_path):
    """Every object and the index of the new version are stored; the cut comes at the pointer PUT."""
    uri, repo, v1_id, v1, env = published
    proxy = InspectingProxy(int(s3.url.rsplit(":", 1)[1]), POINTER_PUT, "cut")
    try:
        r = dnx.run("publish", "--repository", repo, uri, "--endpoint-url", proxy.url, "-q", timeout=300, **env)
    finally:
        proxy.close()
    assert proxy.triggered.is_set(), "the publish never reached the pointer PUT"
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cannot reach the S3 endpoint" in one_error_line(r.stderr)
    prefix = uri.split("/", 3)[3]
    pointer = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=f"{prefix}/{POINTER_NAME}")["Body"].read())
    v2 = _files(repo)
    assert pointer["version"] == v1_id
    stored = {k for k in _keys(s3, f"{prefix}/versions/") if f"/versions/{v1_id}/" not in k}
    new_version = {k.split("/versions/", 1)[1].split("/", 1)[0] for k in stored}
    assert len(new_version) == 1, stored  # the last object went in: the new version is complete but unreferenced
    (vid,) = new_version
    assert stored == {f"{prefix}/versions/{vid}/{p}" for p in [*v2, INDEX_NAME]}
    _reader_sees(s3, uri, v1, tmp_path / "reader")

    r = dnx.run("publish", "--repository", repo, uri, "--endpoint-url", s3.url, "-q", "--json", timeout=300, **env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["version"] == vid and data["uploaded_bytes"] == 0 and data["pointer_switched"]
    _reader_sees(s3, uri, v2, tmp_path / "reader-after")


@pytest.mark.parametrize("sig,trigger", [(signal.SIGTERM, POINTER_PUT), (signal.SIGKILL, POINTER_PUT),
                                         (signal.SIGTERM, FIRST_MODEL_PUT)],
                         ids=["sigterm-at-pointer", "sigkill-at-pointer", "sigterm-mid-first-object"])
def test_signal_to_a_running_publish(dnx, s3, published, tmp_path, sig, trigger):
    uri, repo, v1_id, v1, env = published
    proxy = InspectingProxy(int(s3.url.rsplit(":", 1)[1]), trigger, "hold")
    try:
        proc = dnx.start("publish", "--repository", repo, uri, "--endpoint-url", proxy.url, "-q", **env)
        wait_for(proxy.triggered.is_set, 300, "the publish to reach the held PUT", proc)
        proc.send_signal(sig)
        code, out, err = finish(proc, timeout=60)
    finally:
        proxy.close()
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 128 + sig, out + err
        assert one_error_line(err) == f"Error: interrupted by {signal.Signals(sig).name}"
    _reader_sees(s3, uri, v1, tmp_path / "reader")

    v2 = _files(repo)
    r = dnx.run("publish", "--repository", repo, uri, "--endpoint-url", s3.url, "-q", "--json", timeout=300, **env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["pointer_switched"] and data["previous"] == v1_id != data["version"]
    assert resolve(uri, endpoint_url=s3.url).version == data["version"]
    _reader_sees(s3, uri, v2, tmp_path / "reader-after")
