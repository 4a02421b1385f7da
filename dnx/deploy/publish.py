"""Publish a model repository to S3 so that a reader never sees a half-written copy.

Layout under ``s3://BUCKET/PREFIX``::

    versions/<id>/...              one immutable, complete copy of the repository per content
    versions/<id>/dnx-publish.json its file list (path -> sha256, size), written after every file
    dnx-current.json               the pointer: which version readers use, written last

Why a version prefix and a pointer, not "model files first, configs and manifest last" in place:
Triton reads whatever is under the path it is given, at start-up and on every (re)load. S3 has
no multi-object transaction, so an in-place update is visible file by file: a replica that
starts (or a pod that is rescheduled) mid-publish would load a new ``model.onnx`` with an old
``config.pbtxt``, and an interrupted publish would leave that mix behind for good. A version
prefix is never changed once its index exists, and the pointer is one PUT (S3 makes a single
object's replacement atomic), so readers see the old version or the new one, never a mix;
an interrupted publish leaves only an unreferenced, incomplete prefix that the next publish of
the same content completes. dnx resolves the pointer once (``dnx serve``, ``dnx deploy``)
and hands Triton the concrete ``versions/<id>`` path: every replica of a deployment serves the
same bytes, and moving to a new version is an explicit rollout.

The version id is derived from the content (sha256 of the sorted ``path sha256`` list), so
publishing an unchanged repository again finds every object in place and uploads nothing;
files that did not change since the current version are copied server-side (no upload).
Every file of the repository must be one ``dnx-manifest.json`` records with its sha256 (the
export's files, the configs ``dnx tune`` rewrote) before anything is uploaded; files it does not
list are refused unless ``--allow-extra`` (then marked ``extra`` in the file list). Every
object's SHA-256 as S3 reports it is checked against that sha256.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from dnx import __version__
from dnx._lazy import lazy_import
from dnx.errors import InputError
from dnx.hashing import sha256_bytes, sha256_file
from dnx.locks import repository_lock
from dnx.manifest import CONFIG_FILES, load_manifest, recorded_files
from dnx.model_repository.layout import MANIFEST_NAME
from dnx.storage.published import INDEX_NAME, POINTER_NAME, VERSIONS_DIR, read_json_object, remote_sha256
from dnx.storage.s3 import S3Location, StorageError, check_bucket, client, parse_s3_uri, s3_errors

log = logging.getLogger(__name__)

MAX_SINGLE_PUT = 5 * 1024**3  # S3's limit for one PUT; larger files would need multipart checksums
FORMAT = 1


@dataclass(frozen=True)
class LocalFile:
    """One file of the local repository (``path`` relative, with ``/``)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PlannedObject:
    """What publishing does with one file: ``upload``, ``copy`` (server-side) or ``keep`` (in place)."""

    path: str
    size: int
    sha256: str
    action: str
    source_key: str | None = None
    extra: bool = False  # not listed in the manifest: published with --allow-extra, unverified against it


@dataclass
class PublishPlan:
    """The objects of one publish and the pointer switch."""

    location: S3Location
    version: str
    previous: str | None
    objects: list[PlannedObject]

    @property
    def version_location(self) -> S3Location:
        return self.location.child(VERSIONS_DIR, self.version)

    @property
    def upload_bytes(self) -> int:
        return sum(o.size for o in self.objects if o.action == "upload")

    @property
    def switches_pointer(self) -> bool:
        return self.previous != self.version

    def count(self, action: str) -> int:
        return sum(1 for o in self.objects if o.action == action)

    @property
    def extra(self) -> list[str]:
        """Files published with ``--allow-extra`` that the manifest does not list."""
        return [o.path for o in self.objects if o.extra]


@dataclass
class PublishResult:
    """What a publish did (or, with ``dry_run``, would do)."""

    plan: PublishPlan
    dry_run: bool
    uploaded_bytes: int = 0
    seconds: float = 0.0
    verified: int = 0

    @property
    def uri(self) -> str:
        """The concrete version location readers use."""
        return str(self.plan.version_location)

    def to_dict(self) -> dict:
        p = self.plan
        return {
            "location": str(p.location), "version": p.version, "previous": p.previous, "uri": self.uri,
            "dry_run": self.dry_run, "uploaded_bytes": self.uploaded_bytes, "seconds": round(self.seconds, 3),
            "verified": self.verified, "pointer_switched": p.switches_pointer and not self.dry_run,
            "objects": [{"path": o.path, "action": o.action, "bytes": o.size, **({"extra": True} if o.extra else {})}
                        for o in p.objects],
            "extra": p.extra,
        }


# --------------------------------------------------------------------------- local side


def scan_repository(repository: str | Path) -> list[LocalFile]:
    """Every file of the repository (hidden files left out), hashed, sorted by path."""
    repo = Path(repository)
    if not repo.is_dir():
        raise InputError(f"model repository {repo} does not exist; build it with `dnx export` or pass --repository")
    files = []
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        files.append(LocalFile(rel.as_posix(), path.stat().st_size, sha256_file(path)))
    return files


def check_files(repository: str | Path, files: list[LocalFile], *, allow_extra: bool = False) -> list[str]:
    """Verify every file of the repository against ``dnx-manifest.json``; return the extra files.

    Each file must be one the export (or `dnx tune`, which records what it rewrites) wrote, with
    the sha256 recorded for it (:func:`dnx.manifest.recorded_files`): model files, configs, label
    files, the preprocessing ``model.py``, the golden answers. A recorded file that is missing or
    changed raises :class:`InputError` naming it; so does a file the manifest does not list
    (``__pycache__/``, an editor's ``config.pbtxt~``, an extra version folder), unless
    ``allow_extra``: then the extra paths are returned, to be published and reported as unverified.
    """
    manifest = load_manifest(Path(repository))
    expected = recorded_files(manifest)
    have = {f.path: f.sha256 for f in files}
    for path, digest in expected.items():
        if path not in have:
            raise InputError(f"{path} is listed in {MANIFEST_NAME} but missing from {repository}; re-export with `dnx export`")
        if have[path] != digest:
            raise InputError(
                f"{path} does not match {MANIFEST_NAME} (sha256 {have[path][:12]}... vs {digest[:12]}...); "
                "the file changed after export (and `dnx tune` did not write it): restore it or re-export with `dnx export`"
            )
    extra = [f.path for f in files if f.path not in expected and f.path != MANIFEST_NAME]
    unrecorded = {n for n, r in manifest.models.items() if CONFIG_FILES not in r.extra}  # exported by an older dnx
    older = [p for p in extra if p.split("/")[0] in unrecorded]
    if older and not allow_extra:
        raise InputError(f"{older[0]} has no sha256 in {MANIFEST_NAME}: {repository} was exported by a dnx that did not "
                         "record config and label files; re-export with `dnx export` (or pass --allow-extra to publish "
                         "them unverified)")
    if extra and not allow_extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise InputError(f"{extra[0]}{more} in {repository} was not written by `dnx export` or `dnx tune` "
                         f"(not listed in {MANIFEST_NAME}); remove it, or pass --allow-extra to publish it unverified")
    return extra


def version_id(files: list[LocalFile]) -> str:
    """A content id: the same files with the same bytes always give the same id."""
    return sha256_bytes("".join(f"{f.path}\t{f.sha256}\n" for f in sorted(files, key=lambda f: f.path)).encode())[:16]


def _upload_order(files: list[LocalFile]) -> list[LocalFile]:
    """Model files first, then configs and labels, the manifest last (a reader of an incomplete
    version prefix that ignores the index still never sees a config without its model file)."""

    def rank(f: LocalFile) -> tuple:
        parts = f.path.split("/")
        if f.path == MANIFEST_NAME:
            return (2, f.path)
        return (0 if len(parts) > 2 and parts[1].isdigit() else 1, f.path)

    return sorted(files, key=rank)


# --------------------------------------------------------------------------- remote side
# Readers (resolve, download: dnx serve / validate / deploy) are dnx.storage.published.


def _put_json(s3, bucket: str, key: str, doc: dict) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=(json.dumps(doc, indent=2) + "\n").encode(),
                  ContentType="application/json", ChecksumAlgorithm="SHA256")


def plan_publish(s3, files: list[LocalFile], location: S3Location, extra: frozenset[str] = frozenset()) -> PublishPlan:
    """Decide per file: keep (already in the target version), copy (same bytes in the current version), upload."""
    version = version_id(files)
    pointer = read_json_object(s3, location.bucket, location.key(POINTER_NAME)) or {}
    previous = pointer.get("version")
    reuse: dict[str, str] = {}  # sha256 -> key of an object that holds those bytes
    if previous and previous != version:
        prev = location.child(VERSIONS_DIR, previous)
        index = read_json_object(s3, location.bucket, prev.key(INDEX_NAME)) or {}
        for path, meta in (index.get("files") or {}).items():
            reuse.setdefault(meta["sha256"], prev.key(path))
    target = location.child(VERSIONS_DIR, version)
    objects = []
    for f in _upload_order(files):
        if remote_sha256(s3, location.bucket, target.key(f.path)) == f.sha256:
            objects.append(PlannedObject(f.path, f.size, f.sha256, "keep", extra=f.path in extra))
        elif f.sha256 in reuse:
            objects.append(PlannedObject(f.path, f.size, f.sha256, "copy", reuse[f.sha256], extra=f.path in extra))
        else:
            objects.append(PlannedObject(f.path, f.size, f.sha256, "upload", extra=f.path in extra))
    return PublishPlan(location, version, previous, objects)


def publish(
    repository: str | Path,
    uri: str,
    *,
    endpoint_url: str | None = None,
    dry_run: bool = False,
    allow_extra: bool = False,
    progress: bool = True,
    on_object: Callable[[PlannedObject], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> PublishResult:
    """Publish ``repository`` to ``uri`` (``s3://BUCKET/PREFIX``); see the module docstring for the layout.

    ``dry_run`` plans without writing. Every file is verified against the manifest first
    (:func:`check_files`); ``allow_extra`` publishes files it does not list, marked as extra.
    ``on_object`` is called after each object is in place
    and verified. Raises :class:`InputError` for a local repository that does not match its
    manifest and :class:`StorageError` (one line) for S3 failures.

    The folder's lock (:mod:`dnx.locks`) is held shared from the scan to the last upload, so an
    export or tune never swaps the folder under it; while one writes, this waits for it
    (``on_wait`` is told once, naming the writer).
    """
    location = parse_s3_uri(uri)
    repo = Path(repository)
    if not repo.is_dir():  # before the lock, which would create the folders above it
        raise InputError(f"model repository {repo} does not exist; build it with `dnx export` or pass --repository")
    with repository_lock(repo, LOCK_COMMAND, shared=True, wait=True, on_wait=on_wait):
        return _publish(repo, location, endpoint_url=endpoint_url, dry_run=dry_run, allow_extra=allow_extra,
                        progress=progress, on_object=on_object)


LOCK_COMMAND = "dnx publish"


def _publish(repo: Path, location: S3Location, *, endpoint_url, dry_run, allow_extra, progress, on_object) -> PublishResult:
    TransferConfig = lazy_import("boto3.s3.transfer").TransferConfig  # noqa: N806 - boto3's class
    files = scan_repository(repo)
    extra = check_files(repo, files, allow_extra=allow_extra)
    big = [f.path for f in files if f.size >= MAX_SINGLE_PUT]
    if big:
        raise InputError(f"{big[0]} is 5 GiB or more; dnx publishes files in one PUT (S3's limit is 5 GiB)")
    started = time.perf_counter()
    s3 = client(endpoint_url)
    check_bucket(s3, location, endpoint_url)
    with s3_errors(location, endpoint_url):
        plan = plan_publish(s3, files, location, frozenset(extra))
    result = PublishResult(plan, dry_run)
    if dry_run:
        result.seconds = time.perf_counter() - started
        return result

    target = plan.version_location
    transfer = TransferConfig(multipart_threshold=MAX_SINGLE_PUT, use_threads=False)
    bar = _progress_bar(plan.upload_bytes, progress)
    try:
        with s3_errors(location, endpoint_url):
            for obj in plan.objects:
                key = target.key(obj.path)
                if obj.action == "upload":
                    s3.upload_file(str(repo / obj.path), location.bucket, key, Config=transfer,
                                   ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": obj.sha256}},
                                   Callback=bar.update)
                    result.uploaded_bytes += obj.size
                elif obj.action == "copy":
                    s3.copy_object(Bucket=location.bucket, Key=key, ChecksumAlgorithm="SHA256",
                                   CopySource={"Bucket": location.bucket, "Key": obj.source_key},
                                   Metadata={"sha256": obj.sha256}, MetadataDirective="REPLACE")
                _verify(s3, location.bucket, key, obj)
                result.verified += 1
                if on_object:
                    on_object(obj)
            published_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            if plan.switches_pointer or read_json_object(s3, location.bucket, target.key(INDEX_NAME)) is None:
                _put_json(s3, location.bucket, target.key(INDEX_NAME), {
                    "format": FORMAT, "version": plan.version, "published_at": published_at, "dnx_version": __version__,
                    "files": {o.path: {"sha256": o.sha256, "size": o.size, **({"extra": True} if o.extra else {})}
                              for o in plan.objects},
                })
            if plan.switches_pointer:  # the one write that makes the new version visible
                _put_json(s3, location.bucket, location.key(POINTER_NAME), {
                    "format": FORMAT, "version": plan.version, "path": f"{VERSIONS_DIR}/{plan.version}",
                    "previous": plan.previous, "published_at": published_at,
                    "files": len(plan.objects), "bytes": sum(o.size for o in plan.objects),
                })
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _verify(s3, bucket: str, key: str, obj: PlannedObject) -> None:
    got = remote_sha256(s3, bucket, key)
    if got != obj.sha256:
        raise StorageError(
            f"s3://{bucket}/{key} has sha256 {got or 'unknown'} after upload, but {MANIFEST_NAME} and the local file "
            f"say {obj.sha256}; the file changed during the upload or the server does not keep SHA-256 checksums: re-run `dnx publish`"
        )


def _progress_bar(total: int, enabled: bool):
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="upload",
                disable=not enabled or total == 0, leave=False)
