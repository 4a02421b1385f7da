"""``dnx check``: verify deployed Triton replicas against a repository's golden answers.

Needs only tritonclient, numpy and Pillow (no torch, no ONNX Runtime, no model files), so it
runs from a CD job or a laptop. For every replica (``--url``, repeatable) and every model the
golden set lists:

* **ready**: the model is READY at exactly the versions the repository holds;
* **config**: the served config equals the repository's on the fields dnx decides
  (:data:`dnx.ops.golden.CONFIG_FIELDS`: backend/platform, max batch, inputs/outputs, instance
  count and kind, dynamic batching, parameters, ensemble steps); Triton's autofill is ignored;
* **answers**: the golden photographs (tensor models: preprocessed here with the model's own
  preprocessing; the ensemble: the encoded bytes) give the recorded outputs within the gate the
  model passed at export (cosine, max abs, top-1 with trained weights). The ensemble's cosine
  is taken on centred log-probabilities (= centred logits): probabilities of near-uniform
  outputs are all close to 1/1000 and would agree for any weights;
* **labels**: for models served with a label file (the variants, the softmax, the ensemble),
  Triton's classification extension (``class_count``) answers ``value:index:label`` for the
  top-k classes of each golden photograph; every label must be the one the repository's
  ``labels.txt`` (checked against the manifest's sha256) holds at that index, so a served copy
  with a wrong or shuffled label file fails naming the model and the first wrong class;
* **latency** (``requests > 0``): ``requests`` single-image requests at ``concurrency`` to the
  ensemble (else the first variant); p99 against ``p99_ms`` when given.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dnx._lazy import lazy_import
from dnx.cpu import this_cpu, unsafe_variants
from dnx.errors import DnxError, InputError, ServerError, one_line
from dnx.hashing import sha256_file
from dnx.hosts import is_local_host, url_host
from dnx.manifest import Manifest, read_manifest, recorded_files
from dnx.model_repository.layout import LABELS_NAME, MANIFEST_NAME
from dnx.ops import golden as g
from dnx.parity import cosine_per_sample
from dnx.preprocess import preprocess_bytes
from dnx.spec import get_spec
from dnx.storage.published import download, resolve
from dnx.storage.s3 import client, is_s3_uri, resolve_endpoint

DEFAULT_TIMEOUT_S = 30.0


class CheckFailed(DnxError):
    """At least one check failed; the message names the first failing replica, model and figure."""


@dataclass
class Finding:
    """One verified fact about one model on one replica."""

    url: str
    model: str
    check: str  # ready | config | answers | latency
    passed: bool
    figure: str = ""


@dataclass
class CheckReport:
    """Every finding of every replica, plus the latency figures."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    latency: dict[str, dict] = field(default_factory=dict)  # url -> {"model", "p50_ms", "p99_ms", ...}
    warnings: list[str] = field(default_factory=list)  # e.g. a variant whose numerics this CPU does not meet

    @property
    def passed(self) -> bool:
        """True when every finding passed."""
        return all(f.passed for f in self.findings)

    def failures(self) -> list[Finding]:
        """The findings that failed."""
        return [f for f in self.findings if not f.passed]

    def to_dict(self) -> dict:
        """JSON-ready form (``dnx check --json``)."""
        return {"passed": self.passed, "golden": self.source, "findings": [asdict(f) for f in self.findings],
                "latency": self.latency, "warnings": self.warnings}

    def format_table(self) -> str:
        """One line per finding: replica, model, check, PASS/FAIL, figure."""
        head = ("replica", "model", "check", "result", "figure")
        rows = [(f.url, f.model, f.check, "PASS" if f.passed else "FAIL", f.figure) for f in self.findings]
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
        return "\n".join(fmt.format(*r).rstrip() for r in [head, *rows])

    def failure_line(self) -> str:
        """``check failed: <url> <model> <check>: <figure>`` (+ how many more)."""
        bad = self.failures()
        first = bad[0]
        more = f" (and {len(bad) - 1} more failing check{'s' * (len(bad) > 2)})" if len(bad) > 1 else ""
        return f"check failed: {first.url} {first.model} {first.check}: {first.figure}{more}"


# --------------------------------------------------------------------------- the golden set


def load_golden(repository: str | None = None, golden: str | None = None, *,
                endpoint_url: str | None = None) -> tuple[dict, dict | None, str]:
    """``(golden document, manifest or None, where it came from)`` from a folder, ``s3://`` or a file."""

    if golden and repository:
        raise InputError("pass --repository or --golden, not both")
    if golden:
        return g.read_golden(golden), None, str(golden)
    if not repository:
        raise InputError("pass --repository (a folder or s3://BUCKET/PREFIX) or --golden dnx-golden.json")

    if is_s3_uri(repository):

        endpoint = resolve_endpoint(endpoint_url)
        s3 = client(endpoint)
        published = resolve(repository, endpoint_url=endpoint, s3=s3)
        with tempfile.TemporaryDirectory(prefix="dnx-check-") as tmp:
            view = download(published, tmp, endpoint_url=endpoint, model_files=False, s3=s3)
            doc, manifest = _from_folder(view, read_manifest)
        return doc, manifest, f"{published.version_location}"
    doc, manifest = _from_folder(Path(repository), read_manifest)
    return doc, manifest, str(repository)


def _from_folder(folder: Path, read_manifest) -> tuple[dict, dict]:
    manifest = read_manifest(folder)
    path = folder / g.GOLDEN_NAME
    doc = g.read_golden(path)
    g.verify_against_manifest(path, doc, manifest)
    # A model the manifest lists without golden answers (none recorded for it) is still checked
    # for readiness and config.
    for name, entry in (manifest.get("models") or {}).items():
        cfg = folder / name / "config.pbtxt"
        if name not in doc["models"] and cfg.is_file():
            doc["models"][name] = {"kind": "tensor", "config": g.normalize_config(cfg.read_text(encoding="utf-8")),
                                   "versions": sorted({f.split("/")[0] for f in entry.get("files", {})
                                                       if f.split("/")[0].isdigit()}) or ["1"]}
    # The label files the server must answer with: each checked against the manifest where it records them.
    recorded = recorded_files(Manifest.from_dict(manifest))
    for name, rec in doc["models"].items():
        path = folder / name / LABELS_NAME
        if not path.is_file():
            continue
        digest = recorded.get(f"{name}/{LABELS_NAME}")
        if digest is not None and sha256_file(path) != digest:
            raise InputError(f"{path} does not match the sha256 {MANIFEST_NAME} recorded; the label file changed "
                             "after export: restore it or re-export the repository")
        rec["labels"] = path.read_text(encoding="utf-8").splitlines()
    # The manifest's config record is the repository's word on each variant's config.
    for name, entry in (manifest.get("models") or {}).items():
        if name in doc["models"] and isinstance(entry.get("config"), dict):
            doc["models"][name]["config"].update({k: v for k, v in entry["config"].items() if k in g.CONFIG_FIELDS})
    return doc, manifest


# --------------------------------------------------------------------------- one replica


class _Replica:
    """A tritonclient connection to one replica (gRPC or HTTP) with one-line errors."""

    def __init__(self, url: str, protocol: str, timeout: float):

        self.url, self.protocol, self.timeout = url, protocol, timeout
        self.mod = lazy_import(f"tritonclient.{protocol}")
        self.utils = lazy_import("tritonclient.utils")
        try:
            self.client = self.mod.InferenceServerClient(url, **self._timeouts())
        except Exception as exc:  # noqa: BLE001 - a malformed URL: one line
            raise InputError(f"--url {url}: {one_line(exc)}; pass HOST:PORT") from None

    def _timeouts(self) -> dict:
        return {"connection_timeout": self.timeout, "network_timeout": self.timeout} if self.protocol == "http" else {}

    def call(self, what: str, fn, *args, **kw):
        kw = {**kw, **({"client_timeout": self.timeout} if self.protocol == "grpc" and what != "index" else {})}
        try:
            return fn(*args, **kw)
        except self.utils.InferenceServerException as exc:
            raise ServerError(f"{self.url}: {what}: {one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - connection refused, DNS, timeouts: one line
            raise ServerError(f"{self.url}: {what}: {one_line(exc)}") from None

    def live(self) -> None:
        try:
            ok = self.call("live", self.client.is_server_live)
        except ServerError as exc:
            raise ServerError(f"cannot reach a Triton server at {self.url} over {self.protocol} ({exc}); "
                              "check --url and --protocol (gRPC 8001, HTTP 8000) and that the server runs") from None
        if not ok:
            raise ServerError(f"the Triton server at {self.url} is not live; read its log")

    def index(self) -> dict[str, dict[str, str]]:
        """model -> {version: state}."""
        if self.protocol == "grpc":
            raw = self.call("index", self.client.get_model_repository_index, as_json=True).get("models", [])
        else:
            raw = self.call("index", self.client.get_model_repository_index)
        out: dict[str, dict[str, str]] = {}
        for m in raw:
            out.setdefault(m["name"], {})
            if m.get("version"):
                out[m["name"]][str(m["version"])] = m.get("state", "")
        return out

    def config(self, model: str) -> dict:
        if self.protocol == "grpc":
            return self.call("config", self.client.get_model_config, model, as_json=True)
        return self.call("config", self.client.get_model_config, model)

    def infer(self, model: str, name: str, data: np.ndarray, dtype: str, output: str) -> np.ndarray:
        inp = self.mod.InferInput(name, list(data.shape), dtype)
        inp.set_data_from_numpy(data)
        out = self.mod.InferRequestedOutput(output)
        result = self.call(f"infer {model}", self.client.infer, model, [inp], outputs=[out])
        return result.as_numpy(output)

    def classify(self, model: str, name: str, data: np.ndarray, dtype: str, output: str, k: int) -> np.ndarray:
        """Triton's classification of ``output``: ``[N, k]`` entries ``b"value:index:label"``."""
        inp = self.mod.InferInput(name, list(data.shape), dtype)
        inp.set_data_from_numpy(data)
        out = self.mod.InferRequestedOutput(output, class_count=k)
        result = self.call(f"classify {model}", self.client.infer, model, [inp], outputs=[out])
        return result.as_numpy(output)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass


def _answers_figure(rec: dict, got: np.ndarray, trained: bool) -> tuple[bool, str]:
    """Compare served outputs with the golden ones under the model's gate; ``(passed, figure)``."""

    want = g.decode_array(rec["expected"])
    got = np.asarray(got, dtype=np.float32).reshape(len(got), -1)
    if got.shape != want.shape:
        return False, f"output shape {list(got.shape)}, golden {list(want.shape)}"
    if not np.isfinite(got).all():
        return False, "non-finite outputs"
    gate = rec.get("gate") or {}
    max_abs = float(np.abs(got.astype(np.float64) - want).max())
    if rec["kind"] == "ensemble":
        lw, lg = np.log(np.maximum(want, 1e-45)), np.log(np.maximum(got, 1e-45))
        cos = float(cosine_per_sample(lw - lw.mean(1, keepdims=True), lg - lg.mean(1, keepdims=True)).min())
    else:
        cos = float(cosine_per_sample(want, got).min())
    top1 = float((got.argmax(1) == want.argmax(1)).mean())
    figure = f"cosine {cos:.6f}, max_abs {max_abs:.2e}, top1 {top1:.0%}"
    bad = []
    if gate.get("min_cosine") is not None and cos < gate["min_cosine"]:
        bad.append(f"cosine {cos:.6f} < {gate['min_cosine']}")
    if gate.get("max_abs") is not None and rec["kind"] != "ensemble" and max_abs > gate["max_abs"]:
        bad.append(f"max_abs {max_abs:.2e} > {gate['max_abs']}")
    if trained and gate.get("min_top1") is not None and top1 < gate["min_top1"]:
        bad.append(f"top1 {top1:.0%} < {gate['min_top1']:.0%}")
    via = f" (gate of {rec['variant']})" if rec.get("variant") else ""
    return (False, "; ".join(bad) + via) if bad else (True, figure)


def _labels_figure(labels: list[str], served: np.ndarray, image_names: list[str]) -> tuple[bool, str]:
    """Compare the labels of Triton's classification reply with the repository's label file; ``(passed, figure)``."""
    served = np.asarray(served).reshape(len(image_names), -1)
    checked = 0
    for image, row in zip(image_names, served):
        for entry in row:
            text = entry.decode("utf-8", "replace") if isinstance(entry, bytes) else str(entry)
            _value, index, *label = text.split(":", 2)
            got, k = (label[0] if label else None), int(index)
            want = labels[k] if 0 <= k < len(labels) else None
            if got != want:
                said = f"{got!r}" if got is not None else "no label"
                return False, (f"class {k} served as {said}, the repository's {LABELS_NAME} says {want!r} "
                               f"(top-{len(row)} of {image}); the served label file differs: redeploy the repository")
            checked += 1
    return True, f"{checked} top-{served.shape[1]} labels equal to the repository's {LABELS_NAME}"


def _check_replica(rep: _Replica, doc: dict, inputs: dict, models: list[str], report: CheckReport) -> None:
    index = rep.index()
    if not any(m in index for m in models):
        served = ", ".join(sorted(index)) or "nothing"
        raise InputError(f"the golden set is for {doc.get('model')} ({', '.join(models[:3])}, ...) but {rep.url} serves "
                         f"{served}; pass the golden set of the repository that is deployed there")
    add = lambda model, check, ok, fig="": report.findings.append(Finding(rep.url, model, check, ok, fig))  # noqa: E731
    for model in models:
        rec = doc["models"][model]
        want = sorted(rec.get("versions") or ["1"])
        versions = index.get(model)
        if versions is None:
            add(model, "ready", False, "model missing: not in the server's repository")
            continue
        ready = sorted(v for v, s in versions.items() if s == "READY")
        if ready != want:
            add(model, "ready", False, f"versions ready {ready or 'none'}, expected {want}")
            continue
        add(model, "ready", True, f"version {', '.join(ready)}")
        try:
            diffs = g.config_differences(rec["config"], g.normalize_config(rep.config(model)))
        except ServerError as exc:
            diffs = [str(exc)]
        add(model, "config", not diffs, "; ".join(diffs) if diffs else "equal to the repository's")
        if "expected" not in rec:
            continue
        try:
            if rec["kind"] == "ensemble":
                got = rep.infer(model, rec["input"], inputs["bytes"], "BYTES", rec["output"])
            else:
                cfg = rec["config"]
                name, out = cfg["inputs"][0]["name"], cfg["outputs"][0]["name"]
                got = np.concatenate([rep.infer(model, name, inputs["tensor"][i:i + 1], "FP32", out)
                                      for i in range(len(inputs["tensor"]))])
            ok, fig = _answers_figure(rec, got, bool(doc.get("trained")))
        except (ServerError, InputError) as exc:
            ok, fig = False, one_line(exc)
        add(model, "answers", ok, fig)
        if rec.get("labels"):
            try:
                if rec["kind"] == "ensemble":
                    served = rep.classify(model, rec["input"], inputs["bytes"], "BYTES", rec["output"], g.TOP_K)
                else:
                    cfg = rec["config"]
                    name, out = cfg["inputs"][0]["name"], cfg["outputs"][0]["name"]
                    served = np.concatenate([rep.classify(model, name, inputs["tensor"][i:i + 1], "FP32", out, g.TOP_K)
                                             for i in range(len(inputs["tensor"]))])
                ok, fig = _labels_figure(rec["labels"], served, inputs["names"])
            except (ServerError, InputError, ValueError) as exc:
                ok, fig = False, one_line(exc)
            add(model, "labels", ok, fig)


def _latency(rep_args: tuple, model: str, rec: dict, inputs: dict, requests: int, concurrency: int) -> dict:
    """Per-request latency of ``requests`` single-image requests at ``concurrency`` (one client per thread)."""
    times, errors = [], []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker():
        rep = _Replica(*rep_args)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                k = i % len(inputs["bytes"])
                t0 = time.perf_counter()
                try:
                    if rec["kind"] == "ensemble":
                        rep.infer(model, rec["input"], inputs["bytes"][k:k + 1], "BYTES", rec["output"])
                    else:
                        cfg = rec["config"]
                        rep.infer(model, cfg["inputs"][0]["name"], inputs["tensor"][k:k + 1], "FP32",
                                  cfg["outputs"][0]["name"])
                    with lock:
                        times.append(time.perf_counter() - t0)
                except ServerError as exc:
                    with lock:
                        errors.append(str(exc))
        finally:
            rep.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(times) * 1e3
    q = (lambda p: round(float(np.percentile(ms, p)), 2)) if len(ms) else (lambda p: None)
    return {"model": model, "requests": requests, "concurrency": concurrency, "ok": len(times), "errors": len(errors),
            "first_error": errors[0] if errors else None, "p50_ms": q(50), "p90_ms": q(90), "p99_ms": q(99),
            "throughput_rps": round(len(times) / wall, 2) if wall > 0 else None}


# --------------------------------------------------------------------------- the check


def check(urls: list[str], *, protocol: str = "grpc", repository: str | None = None, golden: str | None = None,
          endpoint_url: str | None = None, models: list[str] | None = None, requests: int = 0, concurrency: int = 1,
          p99_ms: float | None = None, latency_model: str | None = None,
          timeout: float = DEFAULT_TIMEOUT_S) -> CheckReport:
    """Check every replica in ``urls``; returns the report (``report.passed`` says whether all passed).

    User errors (no golden set, a golden set for another model, a server that does not answer)
    raise :class:`~dnx.errors.DnxError` with one line.
    """

    if not urls:
        raise InputError("pass at least one --url HOST:PORT")
    if protocol not in ("grpc", "http"):
        raise InputError(f"--protocol must be grpc or http (got {protocol!r})")
    if requests < 0 or concurrency < 1:
        raise InputError("--requests must be 0 or more and --concurrency at least 1")
    doc, _manifest, source = load_golden(repository, golden, endpoint_url=endpoint_url)
    names = list(doc["models"])
    if models:
        unknown = [m for m in models if m not in doc["models"]]
        if unknown:
            raise InputError(f"--models {unknown[0]!r} is not in the golden set; choose from {', '.join(names)}")
        names = list(models)
    spec = get_spec(doc.get("model") or "densenet121")
    images = g.image_bytes(doc)
    inputs = {"names": [n for n, _ in images], "bytes": np.array([[b] for _, b in images], dtype=np.object_),
              "tensor": np.stack([preprocess_bytes(b, spec) for _, b in images]).astype(np.float32)}
    target = latency_model or next((n for n in names if doc["models"][n]["kind"] == "ensemble"),
                                   next((n for n in names if doc["models"][n]["kind"] == "tensor"), None))
    if latency_model and latency_model not in doc["models"]:
        raise InputError(f"--latency-model {latency_model!r} is not in the golden set; choose from {', '.join(names)}")
    report = CheckReport(source)
    if _manifest and all(is_local_host(url_host(u)) for u in urls):  # a remote server's CPU is not known here
        report.warnings = unsafe_variants({n: e for n, e in (_manifest.get("models") or {}).items() if n in names},
                                          this_cpu())
    for url in urls:
        rep = _Replica(url, protocol, timeout)
        try:
            rep.live()
            _check_replica(rep, doc, inputs, names, report)
        finally:
            rep.close()
        if requests and target:
            lat = _latency((url, protocol, timeout), target, doc["models"][target], inputs, requests, concurrency)
            report.latency[url] = lat
            if lat["errors"]:
                report.findings.append(Finding(url, target, "latency", False,
                                               f"{lat['errors']} of {requests} requests failed: {lat['first_error']}"))
            else:
                fig = f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms at concurrency {concurrency}"
                ok = p99_ms is None or lat["p99_ms"] <= p99_ms
                report.findings.append(Finding(url, target, "latency", ok,
                                               fig + (f" (budget {p99_ms:g} ms)" if p99_ms is not None else "")))
    return report
