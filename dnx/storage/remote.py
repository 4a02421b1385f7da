"""A published S3 repository as a local ``tritonserver`` reads it: directly (default) or synced.

dnx resolves the pointer to one version, then either

* **direct** (default): fetches only the small files (configs, labels, manifest) into a local
  *view* to decide which models this server can load, and hands Triton the version's ``s3://``
  URL with the credentials boto3 found. Triton downloads the model files itself, exactly as each
  pod of the Deployment written by ``dnx deploy`` does, so a local run exercises that path; or
* **sync**: copies the whole version into a cache folder first, every file checked against its
  published sha256 (what KServe's storage initializer does), and serves that folder. A restart
  of the same version reads the cache instead of the network.

``scripts/s3_serving_timing.py`` times both (figures in docs/DEPLOY.md): both reach
the first ready model within 2x of a local folder; sync was the faster of the two against a
loopback S3 server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from dnx.errors import InputError
from dnx.storage.published import PublishedRepository, download, resolve
from dnx.storage.s3 import client, resolve_endpoint, triton_env, triton_uri

LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


@dataclass(frozen=True)
class RemoteRepository:
    """What a server needs: the local view, Triton's URL for the version, and the AWS_* variables."""

    published: PublishedRepository
    view: Path
    triton_uri: str  # the s3:// URL Triton reads, or the synced local folder
    env: dict[str, str]
    endpoint_url: str | None
    synced: bool = False

    @property
    def uri(self) -> str:
        """The concrete ``s3://BUCKET/PREFIX/versions/<id>``."""
        return str(self.published.version_location)


def open_remote(uri: str, view_dir: str | Path, *, endpoint_url: str | None = None, sync: bool = False,
                cache_dir: str | Path | None = None) -> RemoteRepository:
    """Resolve ``uri``; direct: fetch its configs into ``view_dir`` (model files become empty
    placeholders); ``sync``: copy the whole version into ``cache_dir`` (default: :func:`cache_root`)."""
    endpoint = resolve_endpoint(endpoint_url)
    s3 = client(endpoint)
    published = resolve(uri, endpoint_url=endpoint, s3=s3)
    if sync:
        copy = _sync(published, endpoint, s3, cache_dir)
        return RemoteRepository(published, copy, str(copy), {}, endpoint, synced=True)
    view = download(published, view_dir, endpoint_url=endpoint, model_files=False, s3=s3)
    return RemoteRepository(published, view, triton_uri(published.version_location, endpoint), triton_env(endpoint), endpoint)


def _sync(published: PublishedRepository, endpoint: str | None, s3, cache_dir: str | Path | None) -> Path:
    loc = published.version_location
    dest = Path(cache_dir) if cache_dir else cache_root() / loc.bucket / loc.prefix
    return download(published, dest, endpoint_url=endpoint, model_files=True, s3=s3)


def check_reachable_from_container(remote: RemoteRepository) -> None:
    """Raise :class:`InputError` when the endpoint is this host's loopback (a container cannot reach it)."""
    if remote.synced:
        return
    host = urlparse(remote.endpoint_url or "").hostname
    if host in LOOPBACK:
        raise InputError(
            f"the S3 endpoint {remote.endpoint_url} is this machine's loopback, which a container cannot reach; "
            "use an address the container can reach (the host's IP) or --mode local"
        )


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/dnx/s3`` (``~/.cache/dnx/s3``)."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dnx" / "s3"


def local_copy(uri: str, *, endpoint_url: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A verified local copy of the published version of ``uri`` (kept per version; only missing or
    changed files are fetched again), for commands that need the model files themselves."""
    endpoint = resolve_endpoint(endpoint_url)
    s3 = client(endpoint)
    return _sync(resolve(uri, endpoint_url=endpoint, s3=s3), endpoint, s3, cache_dir)
