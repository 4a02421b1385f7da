"""A PNG of a Grafana dashboard drawn from a real Prometheus' query results (matplotlib).

No Grafana runs where dnx is developed and tested; this draws every panel of the dashboard JSON
that ``dnx deploy kubernetes`` writes, with the same PromQL, from ``/api/v1/query_range``. It is
a faithful picture of the data each panel shows, not of Grafana's styling.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from pathlib import Path

from dnx.errors import ServerError, one_line

# Grafana's variables, as a plain Prometheus query needs them.
SUBSTITUTIONS = {"$__rate_interval": "1m", "${datasource}": ""}


def promql(expr: str, substitutions: dict[str, str] | None = None) -> str:
    """``expr`` with Grafana's variables replaced (``$__rate_interval`` -> ``1m``)."""
    for k, v in (substitutions or SUBSTITUTIONS).items():
        expr = expr.replace(k, v)
    return expr


def _get(url: str, timeout: float = 30.0) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            doc = json.loads(resp.read())
    except Exception as exc:  # noqa: BLE001 - refused, HTTP 400 (bad PromQL), timeout: one line
        body = getattr(exc, "read", lambda: b"")()
        detail = body.decode("utf-8", "replace")[:200] if body else one_line(exc)
        raise ServerError(f"Prometheus query {url[:160]} failed: {detail}") from None
    if doc.get("status") != "success":
        raise ServerError(f"Prometheus query failed: {doc.get('error')}")
    return doc["data"]


def query(prometheus: str, expr: str) -> list[dict]:
    """Instant query: ``[{"metric": {...}, "value": [t, "v"]}]``."""
    return _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql(expr)}))["result"]


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    """Range query: ``[{"metric": {...}, "values": [[t, "v"], ...]}]``."""
    params = {"query": promql(expr), "start": start, "end": end, "step": step}
    return _get(f"{prometheus}/api/v1/query_range?" + urllib.parse.urlencode(params))["result"]


def _legend(template: str, labels: dict) -> str:
    out = template
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out.replace("{{", "").replace("}}", "") or "value"


def _panels(doc: dict) -> list[tuple[str, dict]]:
    """``(row title, panel)`` for every non-row panel, in order."""
    out, row = [], ""
    for p in doc.get("panels", []):
        if p.get("type") == "row":
            row = p.get("title", "")
            out.extend((row, sub) for sub in p.get("panels", []))
        else:
            out.append((row, p))
    return out


def render_dashboard_png(doc: dict, prometheus: str, out: str | Path, *, start: float, end: float,
                         step: float = 5.0, columns: int = 5) -> Path:
    """Draw every panel of ``doc`` from ``prometheus`` between ``start`` and ``end`` (unix seconds) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(doc)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.7 * rows), squeeze=False)
    scale = {"ms": 1.0, "bytes": 1 / 2**20, "percentunit": 100.0}
    for ax, (row, panel) in zip(axes.flat, panels):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        drawn = 0
        for target in panel.get("targets", []):
            for series in query_range(prometheus, target["expr"], start, end, step):
                pts = [(float(t) - start, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, [y * scale.get(unit, 1.0) for y in ys], lw=1.2,
                            label=_legend(target.get("legendFormat", ""), series["metric"]))
                    drawn += 1
        label = {"ms": "ms", "bytes": "MiB", "percentunit": "%", "reqps": "req/s"}.get(unit, "")
        ax.set_title(f"{row}\n{panel.get('title', '')}", fontsize=8.5)
        ax.set_ylabel(label, fontsize=7)
        ax.tick_params(labelsize=6.5)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data (no GPU here)" if "GPU" in panel.get("title", "") else "no data",
                    ha="center", va="center", transform=ax.transAxes, fontsize=8, color="gray")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=7)
    fig.suptitle(f"{doc.get('title', 'dashboard')} — panels drawn from a real Prometheus (not Grafana)", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
