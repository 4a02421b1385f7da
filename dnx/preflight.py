"""Fail-fast checks of ``dnx export``: everything that can be known before the export starts.

:func:`preflight` runs first, before torch is imported (that alone takes seconds), so an export
that cannot succeed stops at once with one line saying how to fix it: unusable flag
combinations, an unwritable ``--out`` or cache folder, a missing or non-PyTorch ``--weights``
file, ``--weights imagenet`` with neither network nor a cached copy, missing calibration images.
Checks that need the exported model (parity, state-dict keys and shapes) stay in the pipeline.
Warnings (returned, printed by the CLI before the work): INT8 calibrating on generic or synthetic
images, and an ``--out`` whose configs ``dnx tune`` rewrote (the export replaces them).
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import threading
import zipfile
from pathlib import Path

from dnx.errors import InputError, WeightsError
from dnx.exporter.calibration import NO_BUNDLED_IMAGES, bundled_photographs, bundled_warning
from dnx.model_repository.config_edit import tuned_models
from dnx.model_repository.layout import check_writable_parent
from dnx.preprocess import IMAGE_SUFFIXES
from dnx.spec import get_spec

WEIGHTS_HOST = ("download.pytorch.org", 443)  # where torchvision downloads IMAGENET1K_V1 from
NETWORK_TIMEOUT_S = 2.0
PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")

def preflight(options) -> list[str]:
    """Check an :class:`dnx.pipeline.ExportOptions` before any work; returns warning lines.

    The flags themselves are checked by ``options.check()``, the one place for them; here is what
    depends on the world: the output folder, the weights, the calibration images, tuned configs.
    Raises :class:`InputError` (one line, with the fix) for the first problem found.
    """
    options.check()
    spec = get_spec(options.model)
    _check_out(Path(options.out))
    _check_weights(options.weights, spec)
    warnings = _check_calibration(options) if "int8" in options.precisions else []
    return warnings + _tuned_configs(Path(options.out))


def _check_out(out: Path) -> None:
    check_writable_parent(out)
    _probe_write(out.resolve().parent, f"cannot write {out}", "--out")


def _tuned_configs(out: Path) -> list[str]:
    # An export replaces the whole repository, tuned configs included: say so before the work, not after.
    tuned = tuned_models(out)
    if not tuned:
        return []
    return [f"{out} has configs tuned by `dnx tune` ({', '.join(tuned)}); this export replaces them with the "
            "exported defaults: run `dnx tune` (or `make tune`) again after it"]


def _writable_folder(path: Path, flag: str) -> None:
    """Raise unless ``path`` is, or can be created as, a writable folder."""
    probe = path.resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{flag} {path}: {probe} is a file, not a folder; pass another {flag}")
    _probe_write(probe, f"{flag} {path}", flag)


def _probe_write(folder: Path, what: str, flag: str) -> None:
    # os.access says yes to root even where nothing can be created (/proc, read-only mounts).
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dnx-preflight-", dir=folder))
    except OSError as exc:
        raise InputError(f"{what}: {exc.strerror} in {folder}; pass another {flag}") from None


def _check_weights(weights: str, spec) -> None:
    if weights == "random":
        return
    if weights == "imagenet":
        if not cached_imagenet_weights(spec) and not network_reachable():
            host, port = WEIGHTS_HOST
            raise WeightsError(
                f"could not get torchvision's {spec.weights_enum}.IMAGENET1K_V1 weights: {host}:{port} is "
                f"unreachable (no network?) and no copy is in {hub_checkpoints()}; "
                "pass --weights PATH.pth for a local copy, or --weights random"
            )
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise WeightsError(f"weights file {path} {what}; pass an existing .pth, 'imagenet' or 'random'")
    if not _looks_like_torch_save(path):
        raise WeightsError(f"cannot load weights {path}: not a file written by torch.save; "
                           "pass a state dict saved with torch.save(model.state_dict(), path)")


# torch.save's legacy (non-zip) format starts with its magic number, pickled: PROTO n, LONG1 of 10 bytes, STOP.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive holding ``<name>/data.pkl``, or (legacy format) its magic number
    pickled first. A plain pickle is refused here, before torch loads: torch would refuse it too, after
    a multi-line warning and with a message longer than one line."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2 + len(_LEGACY_MAGIC))
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith("data.pkl") for n in zf.namelist())
        return head[:1] == b"\x80" and head[2:] == _LEGACY_MAGIC  # pickle protocol 2+, then the magic number
    except (OSError, zipfile.BadZipFile):
        return False


def hub_checkpoints() -> Path:
    """The folder torch.hub caches downloaded weights in (same rules as ``torch.hub.get_dir``)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default))) / "hub" / "checkpoints"


def cached_imagenet_weights(spec) -> Path | None:
    """torchvision's downloaded ImageNet weights for ``spec`` (``<arch>-<hash>.pth``), if cached."""
    folder = hub_checkpoints()
    found = sorted(folder.glob(f"{spec.torchvision_fn}-*.pth")) if folder.is_dir() else []
    return found[0] if found else None


@functools.lru_cache(maxsize=None)
def network_reachable(host: tuple[str, int] = WEIGHTS_HOST, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """True when a TCP connection to ``host`` opens within ``timeout`` (or an HTTPS proxy is set).

    Name resolution has no timeout of its own, so the whole attempt runs in a thread that is
    abandoned after ``timeout``. Behind a proxy the download goes through it, so no direct check.
    """
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    ok = []

    def attempt():
        try:
            socket.create_connection(host, timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(ok)


def _check_calibration(o) -> list[str]:
    _writable_folder(Path(o.cache_dir), "--cache-dir")
    if o.calib_dir is not None:
        root = Path(o.calib_dir)
        if not root.is_dir():
            raise InputError(f"--calib-dir {root}: not a folder; pass a folder of JPEG/PNG photographs")
        if not o.calib_synthetic and not _has_image(root):
            raise InputError(f"--calib-dir {root}: no JPEG/PNG images found (searched all subfolders); "
                             "add photographs or pass --calib-synthetic")
        return []
    if o.calib_synthetic:
        return ["INT8 calibrates on SYNTHETIC random data (--calib-synthetic): unfit for production; "
                "pass --calib-dir <folder of your own images>"]
    found = bundled_photographs()
    if not found:
        raise InputError(NO_BUNDLED_IMAGES)
    return [bundled_warning(min(len(found), o.calib_samples))]


def _has_image(root: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in root.rglob("*"))
