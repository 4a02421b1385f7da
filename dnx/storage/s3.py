"""S3 locations (``s3://BUCKET/PREFIX``), one boto3 client factory, one-line errors.

Credentials and region come from the standard AWS chain (environment, ``~/.aws``, instance
role); a custom S3-compatible endpoint is named by ``--endpoint-url`` or the standard
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, the same for every dnx command.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from dnx._lazy import lazy_import
from dnx.errors import DnxError, InputError

DEFAULT_REGION = "us-east-1"
_CREDENTIALS_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "InvalidToken",
                      "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidSecurity"}


class StorageError(DnxError):
    """Object storage could not be reached, refused the credentials, or lacks the bucket/object."""


def is_s3_uri(value) -> bool:
    """True for ``s3://...`` strings."""
    return isinstance(value, str) and value.startswith("s3://")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing ``/``; may be empty)."""

    bucket: str
    prefix: str = ""

    def key(self, *parts: str) -> str:
        """``prefix/part/part`` (without empty pieces)."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def child(self, *parts: str) -> "S3Location":
        """The location ``prefix/parts`` in the same bucket."""
        return S3Location(self.bucket, self.key(*parts))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def parse_s3_uri(uri: str) -> S3Location:
    """``s3://bucket/some/prefix`` -> :class:`S3Location`; raise :class:`InputError` otherwise."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InputError(f"{uri!r} is not an S3 location; write it as s3://BUCKET/PREFIX")
    if ":" in parsed.netloc:
        raise InputError(f"{uri!r}: name a custom endpoint with --endpoint-url or AWS_ENDPOINT_URL, not in the s3:// URL")
    return S3Location(parsed.netloc, parsed.path.strip("/"))


def resolve_endpoint(endpoint_url: str | None = None) -> str | None:
    """``endpoint_url``, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else None (AWS itself)."""
    url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    if url and urlparse(url).scheme not in ("http", "https"):
        raise InputError(f"endpoint URL {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:9000)")
    return url.rstrip("/") if url else None


def session():
    """A boto3 session on the standard credential chain."""
    boto3 = lazy_import("boto3")
    return boto3.session.Session()


def client(endpoint_url: str | None = None):
    """An S3 client for ``endpoint_url`` (see :func:`resolve_endpoint`), failing fast on dead endpoints."""
    from botocore.config import Config

    endpoint = resolve_endpoint(endpoint_url)
    sess = session()
    config = Config(
        connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"},
        # Custom endpoints (MinIO, moto, Ceph) rarely have per-bucket DNS names.
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return sess.client("s3", endpoint_url=endpoint, region_name=sess.region_name or DEFAULT_REGION, config=config)


def triton_env(endpoint_url: str | None = None) -> dict[str, str]:
    """The AWS_* variables a tritonserver process needs to read S3 with the credentials boto3 found.

    Triton's S3 client reads only environment variables, so a profile or an instance role is
    resolved here, once, and handed down as plain variables to the child process.
    """
    sess = session()
    creds = sess.get_credentials()
    if creds is None:
        raise StorageError(no_credentials_message())
    frozen = creds.get_frozen_credentials()
    env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
           "AWS_DEFAULT_REGION": sess.region_name or DEFAULT_REGION}
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    return env


def triton_uri(location: S3Location, endpoint_url: str | None = None) -> str:
    """Triton's spelling: ``s3://bucket/path`` on AWS, ``s3://http://host:port/bucket/path`` elsewhere."""
    endpoint = resolve_endpoint(endpoint_url)
    if not endpoint:
        return str(location)
    return f"s3://{endpoint}/{location.bucket}/{location.prefix}".rstrip("/")


def no_credentials_message() -> str:
    return ("no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE / ~/.aws/credentials)")


def describe_endpoint(endpoint_url: str | None) -> str:
    return resolve_endpoint(endpoint_url) or "AWS S3"


@contextlib.contextmanager
def s3_errors(location: S3Location, endpoint_url: str | None = None):
    """Turn botocore exceptions raised inside the block into one-line :class:`StorageError`."""
    from botocore import exceptions as bx

    where = describe_endpoint(endpoint_url)
    try:
        yield
    except bx.NoCredentialsError:
        raise StorageError(no_credentials_message()) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError, bx.ReadTimeoutError) as exc:
        raise StorageError(
            f"cannot reach the S3 endpoint {where} ({type(exc).__name__}); check --endpoint-url / "
            "AWS_ENDPOINT_URL and that the server is running"
        ) from None
    except bx.ClientError as exc:
        err = exc.response.get("Error", {})
        code, status = str(err.get("Code", "")), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _CREDENTIALS_CODES:
            raise StorageError(
                f"{where} rejected the credentials ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) for this endpoint"
            ) from None
        if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
            raise StorageError(
                f"bucket {location.bucket!r} does not exist on {where}; create it (e.g. `aws s3 mb "
                f"s3://{location.bucket}`) or fix the s3:// URL"
            ) from None
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            raise StorageError(
                f"{where} denied access to {location} ({code}); the credentials need s3:ListBucket, "
                "s3:GetObject and s3:PutObject on it"
            ) from None
        raise StorageError(f"S3 request {exc.operation_name} on {location} failed ({code or status}: "
                           f"{err.get('Message', '')}); check the bucket and the endpoint {where}") from None
    except bx.BotoCoreError as exc:
        raise StorageError(f"S3 request on {location} failed ({exc}); check --endpoint-url and the AWS settings") from None


def check_bucket(s3, location: S3Location, endpoint_url: str | None = None) -> None:
    """Fail in one line unless the bucket exists and the credentials may list it."""
    with s3_errors(location, endpoint_url):
        s3.list_objects_v2(Bucket=location.bucket, Prefix=location.key(), MaxKeys=1)
