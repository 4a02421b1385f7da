"""Reading what ``dnx publish`` wrote: the pointer, a version's file index, and a verified download.

The layout is described in :mod:`dnx.deploy.publish`; readers (``dnx serve``, ``dnx validate``,
``dnx deploy``) need only this module and :mod:`.s3`, never the upload side.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from dnx.hashing import sha256_bytes, sha256_file
from dnx.model_repository.layout import atomic_write_bytes
from dnx.storage.s3 import S3Location, StorageError, check_bucket, client, parse_s3_uri, s3_errors

POINTER_NAME = "dnx-current.json"
INDEX_NAME = "dnx-publish.json"
VERSIONS_DIR = "versions"


def checksum_hex(b64: str | None) -> str | None:
    """The hex SHA-256 of an S3 ``ChecksumSHA256`` (None for none, or a multipart composite)."""
    if not b64 or "-" in b64:  # a multipart ("composite") checksum is not the file's sha256
        return None
    return base64.b64decode(b64).hex()


def remote_sha256(s3, bucket: str, key: str) -> str | None:
    """The object's SHA-256 as S3 reports it (None when the object does not exist or has none)."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return checksum_hex(head.get("ChecksumSHA256")) or (head.get("Metadata") or {}).get("sha256")


def read_json_object(s3, bucket: str, key: str) -> dict | None:
    """A small JSON object, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    try:
        return json.loads(body)
    except ValueError:
        raise StorageError(f"s3://{bucket}/{key} is not JSON; it was not written by `dnx publish` (re-publish)") from None


# --------------------------------------------------------------------------- readers


@dataclass
class PublishedRepository:
    """A published version as readers see it: where it is and its file list."""

    location: S3Location  # the publish location (holding the pointer)
    version: str
    files: dict[str, dict] = field(default_factory=dict)  # path -> {"sha256", "size"}

    @property
    def version_location(self) -> S3Location:
        return self.location.child(VERSIONS_DIR, self.version)


def resolve(uri: str, *, endpoint_url: str | None = None, s3=None) -> PublishedRepository:
    """Follow ``uri``'s pointer to its current complete version.

    ``uri`` is a publish location (``s3://BUCKET/PREFIX``, with ``dnx-current.json``) or one
    version (``s3://BUCKET/PREFIX/versions/<id>``, with ``dnx-publish.json``).
    """
    location = parse_s3_uri(uri)
    s3 = s3 or client(endpoint_url)
    check_bucket(s3, location, endpoint_url)
    with s3_errors(location, endpoint_url):
        pointer = read_json_object(s3, location.bucket, location.key(POINTER_NAME))
        if pointer is not None:
            root, version = location, pointer["version"]
        else:
            parts = location.prefix.rsplit("/", 2)
            if len(parts) < 2 or parts[-2] != VERSIONS_DIR:
                raise StorageError(f"{location} holds no {POINTER_NAME}; publish a repository there first with `dnx publish`")
            root = S3Location(location.bucket, "/".join(parts[:-2]))
            version = parts[-1]
        index = read_json_object(s3, location.bucket, root.child(VERSIONS_DIR, version).key(INDEX_NAME))
    if index is None:
        raise StorageError(f"{root.child(VERSIONS_DIR, version)} is not a complete publication (no {INDEX_NAME}); re-run `dnx publish`")
    return PublishedRepository(root, version, dict(index.get("files") or {}))


def download(published: PublishedRepository, dest: str | Path, *, endpoint_url: str | None = None,
             model_files: bool = True, s3=None) -> Path:
    """Copy a published version into ``dest`` and check every file's sha256 against the index.

    With ``model_files=False`` only configs, labels and the manifest are fetched and model files
    are left as empty placeholders: enough to decide which models a server can load.
    """
    dest = Path(dest)
    s3 = s3 or client(endpoint_url)
    loc = published.version_location
    with s3_errors(loc, endpoint_url):
        for path, meta in published.files.items():
            target = dest / path
            parts = path.split("/")
            if not model_files and len(parts) > 2 and parts[1].isdigit():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
                continue
            if target.is_file() and target.stat().st_size == meta["size"] and sha256_file(target) == meta["sha256"]:
                continue
            data = s3.get_object(Bucket=loc.bucket, Key=loc.key(path))["Body"].read()
            if sha256_bytes(data) != meta["sha256"]:
                raise StorageError(f"{loc}/{path} does not match its published sha256; re-run `dnx publish`")
            atomic_write_bytes(target, data)
    return dest
