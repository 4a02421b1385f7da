"""The served side of a measurement: what a Triton server serves, which of it dnx can measure,
model control (``load_model(config=...)``), the local server a run launches, and what the
repository's manifest says about each model.

Every perf command (perf, bench, tune) asks these questions here, so each has one answer.
The manifest is read only through :func:`repository_manifest` (the typed
:class:`dnx.manifest.Manifest`; dug into only by :func:`manifest_entry` and :func:`variant_of`);
:func:`repository_manifest_json` is the JSON object ``dnx tune``'s write-back edits.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from dnx._lazy import lazy_import
from dnx.errors import InputError, ServerError, one_line
from dnx.kinds import backend_kind_of
from dnx.manifest import Manifest, ModelRecord, load_manifest, read_manifest, repository_calibration as _calibration
from dnx.model_repository.config_edit import repository_config_json
from dnx.model_repository.render import TritonConfig
from dnx.serving.server import TritonServer
from dnx.spec import PRECISIONS, RUNTIME_TAGS

_TAG_RUNTIMES = {tag: rt for rt, tag in RUNTIME_TAGS.items()}


# ------------------------------------------------------------------ the manifest


def repository_manifest(repository: str | os.PathLike) -> Manifest | None:
    """The typed ``dnx-manifest.json`` of ``repository`` (:func:`dnx.manifest.load_manifest`), or None for a
    repository dnx did not build (corrupt: InputError)."""
    return load_manifest(repository, required=False)


def repository_manifest_json(repository: str | os.PathLike) -> dict | None:
    """The manifest as its JSON object, for ``dnx tune``'s write-back (which edits it); perf reads
    :func:`repository_manifest`."""
    return read_manifest(repository, required=False)


def repository_calibration(repository: str | os.PathLike) -> str:
    """One line on how the repository's INT8 models were calibrated (from its manifest)."""
    return _calibration(Path(repository))


def _typed(manifest: Manifest | dict | None) -> Manifest | None:
    """A manifest as the typed record (a JSON object, as tune holds it, is read the same way)."""
    return Manifest.from_dict(manifest) if isinstance(manifest, dict) else manifest


def manifest_entry(manifest: Manifest | dict | None, model: str) -> ModelRecord | None:
    """The manifest's record of ``model`` (None when it has none)."""
    m = _typed(manifest)
    return m.models.get(model) if m is not None else None


def variant_of(model: str, manifest: Manifest | dict | None = None) -> tuple[str, str]:
    """``(precision, runtime)`` of a served model: from the manifest, else from its name.

    Names follow ``<model>_<onnx|openvino|trt>[_<precision>]``; unknown parts give ``"?"``.
    """
    manifest = _typed(manifest)
    entry = manifest_entry(manifest, model)
    if entry is not None and entry.precision and entry.runtime:
        return str(entry.precision), str(entry.runtime)
    ensemble = (manifest.ensemble if manifest is not None else None) or {}
    if ensemble.get("name") == model and ensemble.get("variant"):  # bytes in: its variant's precision
        precision, runtime = variant_of(ensemble["variant"], manifest)
        return precision, f"ensemble({runtime})"
    parts = model.split("_")
    for i, tag in enumerate(parts):
        if tag in _TAG_RUNTIMES:
            rest = parts[i + 1:]
            precision = rest[0] if rest and rest[0] in PRECISIONS else ("fp32" if not rest else "?")
            return precision, _TAG_RUNTIMES[tag]
    return "?", "?"


def backend_kind(cfg: TritonConfig) -> str:
    """The backend of a config, one spelling: ``onnxruntime``, ``openvino``, ``tensorrt_plan``, ..."""
    return backend_kind_of(cfg.backend or cfg.platform or "")


# ------------------------------------------------------------------ the repository on disk


def model_file(repository: str | os.PathLike, model: str) -> Path | None:
    """Version 1's ONNX or OpenVINO IR file of ``model`` in a repository folder, or None."""
    files = sorted(p for p in (Path(repository) / model / "1").glob("model.*") if p.suffix in (".onnx", ".xml"))
    return files[0] if files else None


@dataclass(frozen=True)
class OpenVINOModel:
    """An OpenVINO model of the repository, as served: its file, precision and config parameters."""

    name: str
    path: Path
    precision: str
    parameters: dict | None


def openvino_models(repository: str | os.PathLike, manifest: Manifest | None) -> list[OpenVINOModel]:
    """Every OpenVINO model of a repository folder with a model file, in name order."""
    manifest, found = _typed(manifest), []
    for d in sorted(p for p in Path(repository).iterdir() if p.is_dir()):
        precision, runtime = variant_of(d.name, manifest)
        path = model_file(repository, d.name)
        if runtime == "openvino" and path is not None:
            entry = manifest_entry(manifest, d.name)
            found.append(OpenVINOModel(d.name, path, precision, entry.config.get("parameters") if entry else None))
    return found


# ------------------------------------------------------------------ what the server serves


@dataclass
class ServedModel:
    """A READY model on the server and the config read back from it (Triton's JSON, as served)."""

    name: str
    version: str
    config: dict

    @functools.cached_property
    def triton(self) -> TritonConfig:
        """The served config as the one config type (instances, batching, parameters)."""
        return TritonConfig.from_served(self.config)

    @property
    def max_batch_size(self) -> int:
        return self.triton.max_batch_size

    @property
    def variable_inputs(self) -> list[str]:
        """Inputs with a variable (-1) dimension: perf_analyzer would need ``--shape`` for them."""
        return [i.get("name", "?") for i in self.config.get("input", []) if any(int(d) < 0 for d in i.get("dims", []))]

    @property
    def string_inputs(self) -> list[str]:
        """Inputs of TYPE_STRING (encoded images): measured with real JPEGs as ``--input-data``."""
        return [i.get("name", "?") for i in self.config.get("input", []) if i.get("data_type") == "TYPE_STRING"]

    @property
    def ensemble_steps(self) -> list[str]:
        """Model names of the steps, for an ensemble (empty otherwise)."""
        return [st.get("model_name", "") for st in (self.config.get("ensemble_scheduling") or {}).get("step", [])]

    @property
    def instances(self) -> int:
        return self.triton.instance_count

    @property
    def on_gpu(self) -> bool:
        return any(g.get("kind") == "KIND_GPU" for g in self.config.get("instance_group", []))

    def summary(self) -> dict:
        """The config fields that decide performance (for reports)."""
        c, t = self.config, self.triton
        return {
            "version": self.version,
            "backend": t.backend or t.platform or "",
            "max_batch_size": t.max_batch_size,
            # gRPC's JSON omits zero defaults that HTTP's includes: normalised to both fields.
            "dynamic_batching": None if not t.dynamic_batching else {
                "preferred_batch_size": t.preferred_batch_sizes, "max_queue_delay_microseconds": t.max_queue_delay_us,
            },
            "instance_group": [
                {"count": int(g.get("count", 1)), "kind": g.get("kind", "")} for g in c.get("instance_group", [])
            ],
            "parameters": dict(t.parameters),
        }


def _client(url: str, protocol: str):
    if protocol == "grpc":
        return lazy_import("tritonclient.grpc").InferenceServerClient(url=url)
    if protocol == "http":
        return lazy_import("tritonclient.http").InferenceServerClient(url=url)
    raise InputError(f"--protocol {protocol!r} is not supported; use grpc or http")


def inspect_server(url: str, protocol: str = "grpc", models: list[str] | None = None) -> list[ServedModel]:
    """Check the server is up and return the requested (default: all READY) models with their configs.

    Raises :class:`ServerError` when the server is down and :class:`InputError` for a model
    that is unknown or not ready.
    """
    utils = lazy_import("tritonclient.utils")
    client = _client(url, protocol)
    try:
        return _inspect(client, utils.InferenceServerException, f"{url} ({protocol})", protocol, models)
    finally:
        client.close()


def _inspect(client, client_error, where: str, protocol: str, models: list[str] | None) -> list[ServedModel]:
    json_kw = {"as_json": True} if protocol == "grpc" else {}
    try:
        if not client.is_server_live():
            raise ServerError(f"the Triton server at {where} is not live; start it with `make serve` or pass --launch")
        index = client.get_model_repository_index(**json_kw)
    except (client_error, OSError) as exc:  # the HTTP client raises plain socket errors
        raise ServerError(
            f"no Triton server answers at {where} ({one_line(exc)}); start one with `make serve`, pass --launch, "
            "or fix --url"
        ) from None
    entries = index.get("models", []) if isinstance(index, dict) else index
    states = {e["name"]: (e.get("state", ""), e.get("reason", "")) for e in entries}
    ready = sorted(n for n, (s, _) in states.items() if s == "READY")
    wanted = models or ready
    if not wanted:
        raise ServerError(f"the server at {where} has no READY model; check its log and the repository it serves")
    for name in wanted:
        if name not in states:
            raise InputError(
                f"model {name!r} is not in the repository served at {where}; "
                f"choose from: {', '.join(ready) or '(none ready)'}"
            )
        state, reason = states[name]
        if state != "READY":
            raise ServerError(f"model {name!r} is {state or 'not loaded'} on {where} ({reason or 'no reason given'}); "
                              "check the server log")
    out = []
    for name in wanted:
        try:
            meta = client.get_model_config(name, **json_kw)
        except (client_error, OSError) as exc:
            raise ServerError(f"cannot read the config of {name!r} from {where}: {exc}; check the server log") from None
        cfg = meta.get("config", meta)
        version = next((e.get("version", "") for e in entries if e["name"] == name and e.get("version")), "")
        out.append(ServedModel(name=name, version=str(version), config=cfg))
    return out


def ensemble_internal_steps(models: list[ServedModel]) -> dict[str, str]:
    """First and last steps of each ensemble (preprocess, softmax): measured through the ensemble, not alone."""
    out = {}
    for m in models:
        steps = m.ensemble_steps
        for step in (steps[:1] + steps[-1:]) if len(steps) > 2 else []:
            out[step] = f"ensemble step of {m.name} (measured through it)"
    return out


def measurable(models: list[ServedModel], named: bool, ensembles: bool = True) -> tuple[list[ServedModel], dict[str, str]]:
    """``(measured, skipped)``: the one rule for which served models a perf command measures.

    perf_analyzer needs fixed input shapes; an ensemble's preprocess and softmax steps are
    measured through the ensemble, not alone (unless ``named``: the user asked for them); with
    ``ensembles=False`` (bench compares runtimes) an unnamed ensemble is left out too.
    ``skipped`` maps each left-out model to why.
    """
    skipped = {m.name: f"variable input dims ({', '.join(m.variable_inputs)})" for m in models if m.variable_inputs}
    if not named:
        skipped.update(ensemble_internal_steps(models))
        if not ensembles:
            skipped.update({m.name: "ensemble (bytes in; its preprocessing cost: dnx perf --models <ensemble>,<variant>)"
                            for m in models if m.ensemble_steps and m.name not in skipped})
    return [m for m in models if m.name not in skipped], skipped


def default_metrics_url(url: str, port: int = 8002) -> str:
    """``host:8002/metrics`` for a server at ``host:port``."""
    host = url.rsplit(":", 1)[0] if ":" in url else url
    return f"{host}:{port}/metrics"


# ------------------------------------------------------------------ model control and the launched server


class ModelControl:
    """Triton's model-control API on a gRPC server run with ``--model-control-mode explicit``."""

    def __init__(self, url: str):
        self.url = url
        self.client = lazy_import("tritonclient.grpc").InferenceServerClient(url=url)
        self.error_type = lazy_import("tritonclient.utils").InferenceServerException

    def load(self, name: str, config_json: str) -> None:
        """Load ``name`` with ``config_json`` (Triton's JSON form) in place of its repository config."""
        try:
            self.client.load_model(name, config=config_json)
        except self.error_type as exc:
            msg = one_line(exc)
            if "explicit" in msg.lower() or "not allowed" in msg.lower():
                raise ServerError(f"the server at {self.url} refuses load_model ({msg}); run it with "
                                  "--model-control-mode explicit (as `dnx serve` does) or use --launch") from None
            raise

    def restore(self, repository: str | os.PathLike, names: list[str]) -> None:
        """Serve each model's repository config again; best effort (the caller is cleaning up).

        ``load_model(name)`` alone would keep an override (Triton sees unchanged files), so the
        repository's config is passed explicitly.
        """
        for name in names:
            with contextlib.suppress(Exception):
                self.load(name, repository_config_json(Path(repository) / name))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def __enter__(self) -> "ModelControl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def launched_server(repository: Path | str, models: list[str] | None, log_file: Path, endpoint_url: str | None = None):
    """A local Triton server on free ports for the duration of a run (see :mod:`dnx.serving.server`)."""
    server = TritonServer(repository, mode="auto", grpc_port=0, http_port=0, metrics_port=0,
                          log_file=log_file, models=models, endpoint_url=endpoint_url)
    with server:
        yield server
