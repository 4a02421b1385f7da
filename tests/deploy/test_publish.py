"""`dnx publish` against a real S3-compatible server (moto, started by the tests; no S3 mocks)."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.deploy.publish import publish, scan_repository
from dnx.perf.tune.write_back import write_back
from dnx.serving.server import free_port
from dnx.storage.published import INDEX_NAME, POINTER_NAME, download, resolve
from dnx.storage.s3 import StorageError

from tests.perf.tune.test_write_back import _result as tune_result

from .conftest import TcpProxy

pytestmark = pytest.mark.s3


def _prefix() -> str:
    return f"models/{uuid.uuid4().hex[:8]}"


def _publish_cli(repo, uri, *extra):
    return CliRunner().invoke(cli, ["publish", "--repository", str(repo), uri, "--json", *extra])


def _objects(s3_server, prefix: str) -> dict[str, bytes]:
    s3 = s3_server.client()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_server.bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: s3.get_object(Bucket=s3_server.bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture
def repo_copy(fp32_repository, tmp_path):
    dst = tmp_path / "model_repository"
    shutil.copytree(fp32_repository, dst)
    return dst


def test_publish_uploads_every_file_verified_then_republish_uploads_nothing(fp32_repository, s3_env):
    prefix = _prefix()
    uri = f"s3://{s3_env.bucket}/{prefix}"
    first = _publish_cli(fp32_repository, uri, "--endpoint-url", s3_env.url)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    local = {f.path: f for f in scan_repository(fp32_repository)}
    assert data["uploaded_bytes"] == sum(f.size for f in local.values()) > 30_000_000
    assert {o["path"]: o["action"] for o in data["objects"]} == {p: "upload" for p in local}
    assert data["pointer_switched"] and data["previous"] is None and data["verified"] == len(local)

    remote = _objects(s3_env, prefix)
    pointer = json.loads(remote.pop(POINTER_NAME))
    assert pointer["version"] == data["version"] and pointer["path"] == f"versions/{data['version']}"
    version_prefix = f"versions/{data['version']}/"
    index = json.loads(remote.pop(version_prefix + INDEX_NAME))
    assert set(remote) == {version_prefix + p for p in local}
    for path, f in local.items():  # the bytes in S3 are the local bytes
        assert hashlib.sha256(remote[version_prefix + path]).hexdigest() == f.sha256 == index["files"][path]["sha256"]
    manifest = json.loads((fp32_repository / "dnx-manifest.json").read_text())
    assert index["files"]["densenet121_onnx/1/model.onnx"]["sha256"] == manifest["models"]["densenet121_onnx"]["files"]["1/model.onnx"]

    again = _publish_cli(fp32_repository, uri, "--endpoint-url", s3_env.url)
    assert again.exit_code == 0, again.output
    data2 = json.loads(again.stdout)
    assert data2["uploaded_bytes"] == 0 and data2["version"] == data["version"]
    assert {o["action"] for o in data2["objects"]} == {"keep"} and not data2["pointer_switched"]
    assert data2["verified"] == len(local)


def test_dry_run_lists_changes_and_writes_nothing(fp32_repository, s3_env):
    prefix = _prefix()
    result = CliRunner().invoke(cli, ["publish", "-r", str(fp32_repository), f"s3://{s3_env.bucket}/{prefix}",
                                      "--endpoint-url", s3_env.url, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "upload  densenet121_onnx/1/model.onnx" in result.output
    files = len(scan_repository(fp32_repository))
    assert result.output.count("  upload  ") == files and f"dry run: {files} files to upload (30." in result.output
    assert "would switch" in result.output and "(none) ->" in result.output
    assert _objects(s3_env, prefix) == {}


def _tune_write_back(repo, tmp_path):
    """Rewrite densenet121_onnx's config as `dnx tune` does (its real write-back, 2 instances)."""
    res, bases = tune_result(repo, tmp_path)
    write_back(res, bases, repo)
    assert "count: 2" in (repo / "densenet121_onnx" / "config.pbtxt").read_text()


def test_changed_file_uploads_alone_others_copied_server_side(repo_copy, s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.url)  # the standard variable instead of --endpoint-url
    uri = f"s3://{s3_env.bucket}/{_prefix()}"
    v1 = publish(repo_copy, uri, progress=False)
    _tune_write_back(repo_copy, tmp_path)  # a config tune rewrote is recorded, so it publishes
    v2 = publish(repo_copy, uri, progress=False)
    actions = {o.path: o.action for o in v2.plan.objects}
    cfg = "densenet121_onnx/config.pbtxt"
    assert actions[cfg] == "upload" and actions["dnx-manifest.json"] == "upload"
    assert actions[cfg + ".orig"] == "copy"  # the untuned config: the same bytes as v1's config.pbtxt
    assert actions["densenet121_onnx/1/model.onnx"] == "copy"
    assert v2.uploaded_bytes == (repo_copy / cfg).stat().st_size + (repo_copy / "dnx-manifest.json").stat().st_size
    assert v2.plan.previous == v1.plan.version != v2.plan.version
    assert resolve(uri).version == v2.plan.version
    # The old version stays complete and untouched for anyone who pinned it.
    old = resolve(f"{uri}/versions/{v1.plan.version}")
    assert old.version == v1.plan.version and cfg + ".orig" not in old.files


def test_repository_that_does_not_match_its_manifest_is_refused(repo_copy, s3_env):
    with open(repo_copy / "densenet121_onnx" / "1" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    prefix = _prefix()
    result = _publish_cli(repo_copy, f"s3://{s3_env.bucket}/{prefix}", "--endpoint-url", s3_env.url)
    assert result.exit_code == 1
    assert "densenet121_onnx/1/model.onnx does not match dnx-manifest.json" in result.stderr
    assert "Traceback" not in result.output and _objects(s3_env, prefix) == {}


def _one_line(result, *needles):
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("path, change", [
    ("densenet121_preprocess/1/model.py", "import os\n"),
    ("densenet121_preprocess/1/dnx_preprocess.py", "\n"),
    ("densenet121_onnx/labels.txt", "extra label\n"),
    ("densenet121/labels.txt", "extra label\n"),
    ("densenet121_onnx/config.pbtxt", "# edited\n"),
    ("densenet121_preprocess/config.pbtxt", "# edited\n"),
    ("dnx-golden.json", "\n"),
])
def test_every_edited_file_is_refused_naming_it(repo_copy, s3_env, path, change):
    """Not only the model files: configs, label files, the preprocessing code and the golden answers."""
    with open(repo_copy / path, "a") as fh:
        fh.write(change)
    prefix = _prefix()
    result = _publish_cli(repo_copy, f"s3://{s3_env.bucket}/{prefix}", "--endpoint-url", s3_env.url, "--allow-extra")
    _one_line(result, f"{path} does not match dnx-manifest.json", "changed after export")
    assert _objects(s3_env, prefix) == {}


EXTRA = ["densenet121_preprocess/1/__pycache__/model.cpython-311.pyc", "densenet121_onnx/config.pbtxt~",
         "densenet121_onnx/2/model.onnx"]


@pytest.mark.parametrize("path", EXTRA)
def test_a_file_the_export_did_not_write_is_refused_unless_allow_extra(repo_copy, s3_env, path):
    (repo_copy / path).parent.mkdir(parents=True, exist_ok=True)
    (repo_copy / path).write_bytes(b"not from dnx export\n")
    prefix = _prefix()
    uri = f"s3://{s3_env.bucket}/{prefix}"
    refused = _publish_cli(repo_copy, uri, "--endpoint-url", s3_env.url)
    _one_line(refused, f"{path} in {repo_copy} was not written by `dnx export` or `dnx tune`", "--allow-extra")
    assert _objects(s3_env, prefix) == {}

    allowed = _publish_cli(repo_copy, uri, "--endpoint-url", s3_env.url, "--allow-extra")
    assert allowed.exit_code == 0, allowed.output
    data = json.loads(allowed.stdout)
    assert data["extra"] == [path]
    assert [o["path"] for o in data["objects"] if o.get("extra")] == [path]
    index = json.loads(_objects(s3_env, prefix)[f"versions/{data['version']}/{INDEX_NAME}"])
    assert index["files"][path]["extra"] is True
    assert not any(meta.get("extra") for p, meta in index["files"].items() if p != path)

    text = CliRunner().invoke(cli, ["publish", "-r", str(repo_copy), uri, "--endpoint-url", s3_env.url, "-q",
                                    "--allow-extra"])
    assert text.exit_code == 0, text.output
    assert f"  extra   {path} (not in dnx-manifest.json: published unverified" in text.output
    assert "(1 extra files against the local file only)" in text.output


def test_a_repository_exported_without_config_hashes_says_re_export(repo_copy, s3_env):
    manifest = json.loads((repo_copy / "dnx-manifest.json").read_text())
    for record in manifest["models"].values():
        del record["config_files"]  # as an older dnx wrote it
    (repo_copy / "dnx-manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    prefix = _prefix()
    result = _publish_cli(repo_copy, f"s3://{s3_env.bucket}/{prefix}", "--endpoint-url", s3_env.url)
    _one_line(result, "densenet121_onnx/config.pbtxt has no sha256 in dnx-manifest.json",
              "re-export with `dnx export`")
    assert _objects(s3_env, prefix) == {}


def test_a_config_edited_after_tune_is_refused(repo_copy, s3_env, tmp_path):
    _tune_write_back(repo_copy, tmp_path)
    cfg = repo_copy / "densenet121_onnx" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("count: 2", "count: 3"))
    prefix = _prefix()
    result = _publish_cli(repo_copy, f"s3://{s3_env.bucket}/{prefix}", "--endpoint-url", s3_env.url)
    _one_line(result, "densenet121_onnx/config.pbtxt does not match dnx-manifest.json")
    assert _objects(s3_env, prefix) == {}


def test_interrupted_publish_leaves_readers_on_previous_version_and_resumes(repo_copy, s3_env, tmp_path):
    uri = f"s3://{s3_env.bucket}/{_prefix()}"
    v1 = publish(repo_copy, uri, endpoint_url=s3_env.url, progress=False)
    v1_files = {f.path: f.sha256 for f in scan_repository(repo_copy)}
    v1_config = (repo_copy / "densenet121_onnx" / "config.pbtxt").read_text()
    _tune_write_back(repo_copy, tmp_path)

    proxy = TcpProxy(int(s3_env.url.rsplit(":", 1)[1]))
    done = []

    def stop_server_after_first_object(obj):
        done.append(obj.path)
        proxy.cut()  # the endpoint the publisher talks to is gone from here on

    with pytest.raises(StorageError, match="cannot reach the S3 endpoint"):
        publish(repo_copy, uri, endpoint_url=proxy.url, progress=False, on_object=stop_server_after_first_object)
    assert len(done) == 1  # cut off after the first object of the new version

    # Readers still get the previous, complete version, byte for byte.
    seen = resolve(uri, endpoint_url=s3_env.url)
    assert seen.version == v1.plan.version
    copy = download(seen, tmp_path / "reader", endpoint_url=s3_env.url)
    assert {f.path: f.sha256 for f in scan_repository(copy)} == v1_files
    assert (copy / "densenet121_onnx" / "config.pbtxt").read_text() == v1_config

    # Publishing again finishes the new version without moving the object it already stored a second time.
    v2 = publish(repo_copy, uri, endpoint_url=s3_env.url, progress=False)
    actions = {o.path: o.action for o in v2.plan.objects}
    assert actions[done[0]] == "keep" and actions["densenet121_onnx/config.pbtxt"] == "upload"
    assert resolve(uri, endpoint_url=s3_env.url).version == v2.plan.version != v1.plan.version


@pytest.mark.parametrize("case", ["wrong secret", "unknown key", "missing bucket", "unreachable", "no credentials"])
def test_storage_failures_are_one_line_errors(case, fp32_repository, s3_env, monkeypatch):
    bucket, endpoint = s3_env.bucket, s3_env.url
    if case == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        expected = "rejected the credentials (SignatureDoesNotMatch); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    elif case == "unknown key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADOESNOTEXIST0000")
        expected = "rejected the credentials (InvalidAccessKeyId)"
    elif case == "missing bucket":
        bucket = "no-such-bucket-dnx"
        expected = "bucket 'no-such-bucket-dnx' does not exist on http://127.0.0.1:"
    elif case == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
        expected = f"cannot reach the S3 endpoint {endpoint}"
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        expected = "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    result = CliRunner().invoke(cli, ["publish", "-r", str(fp32_repository), f"s3://{bucket}/x", "--endpoint-url", endpoint, "-q"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and expected in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_local_copy_is_verified_and_reused(fp32_repository, s3_env, tmp_path):
    from dnx.storage.remote import local_copy

    uri = f"s3://{s3_env.bucket}/{_prefix()}"
    v = publish(fp32_repository, uri, endpoint_url=s3_env.url, progress=False)
    copy = local_copy(uri, endpoint_url=s3_env.url, cache_dir=tmp_path / "cache")
    assert {f.path: f.sha256 for f in scan_repository(copy)} == {f.path: f.sha256 for f in scan_repository(fp32_repository)}
    onnx = copy / "densenet121_onnx" / "1" / "model.onnx"
    mtime = onnx.stat().st_mtime_ns
    local_copy(uri, endpoint_url=s3_env.url, cache_dir=tmp_path / "cache")
    assert onnx.stat().st_mtime_ns == mtime  # already verified in place: not fetched again

    # Bytes changed in S3 behind dnx's back are refused, not served.
    key = v.plan.version_location.key("densenet121_onnx/labels.txt")
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=key, Body=b"tampered\n")
    with pytest.raises(StorageError, match="labels.txt does not match its published sha256"):
        local_copy(uri, endpoint_url=s3_env.url, cache_dir=tmp_path / "other")


def test_publish_waits_while_an_export_holds_the_repository(repo_copy, s3_env):
    """The folder's lock (dnx.locks), held here as `dnx export` holds it: publish never reads a half swap."""
    import os
    import subprocess
    import sys

    from dnx.locks import repository_lock

    prefix = _prefix()
    uri = f"s3://{s3_env.bucket}/{prefix}"
    with repository_lock(repo_copy, "dnx export"):
        proc = subprocess.Popen([sys.executable, "-m", "dnx", "publish", "--repository", str(repo_copy), uri,
                                 "--endpoint-url", s3_env.url, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        line = proc.stderr.readline().strip()
        assert line == f"waiting for pid {os.getpid()} (dnx export) to finish with {repo_copy}"
        assert proc.poll() is None and _objects(s3_env, prefix) == {}  # nothing read, nothing uploaded
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["pointer_switched"] and data["verified"] == len(scan_repository(repo_copy))
    assert POINTER_NAME in _objects(s3_env, prefix)
