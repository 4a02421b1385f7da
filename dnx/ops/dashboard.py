"""The Grafana dashboard of a Triton Deployment, built with grafana-foundation-sdk (Grafana's own
dashboards-as-code library) and importable as is (Dashboards → New → Import).

One row per model: requests/s, failures/s, end-to-end latency p50/p95/p99, queue time
p50/p95/p99 (Triton's summaries, worst replica), batch size achieved (inferences per execution).
One server row: replicas up, CPU utilisation and memory, and for a GPU deployment GPU
utilisation and memory (a CPU server exports no ``nv_gpu_*`` series: panels that could never
show data are left out). Panels query Prometheus through the ``$datasource`` variable; rates use
Grafana's ``$__rate_interval``.
"""

from __future__ import annotations

import json

from dnx.ops.rules import MonitoringSpec

RATE = "$__rate_interval"
QUANTILES = ("0.5", "0.95", "0.99")


def panel_queries(spec: MonitoringSpec) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``(row title, panel title, [(expr, legend)])`` of every panel, in order (data, not JSON)."""
    out = []
    q = "|".join(QUANTILES)
    for m in spec.models:
        s = f'{{job="{spec.job}",model="{m}"}}'
        sq = f'{{job="{spec.job}",model="{m}",quantile=~"{q}"}}'
        out += [
            (m, "Requests/s", [(f"sum(rate(nv_inference_request_success{s}[{RATE}]))", "success"),
                               (f"sum(rate(nv_inference_request_failure{s}[{RATE}]))", "failure")]),
            (m, "Failures/s by reason", [(f"sum by (reason) (rate(nv_inference_request_failure{s}[{RATE}]))",
                                          "{{reason}}")]),
            (m, "End-to-end latency (worst replica)",
             [(f"max by (quantile) (nv_inference_request_summary_us{sq}) / 1000", "p{{quantile}}")]),
            (m, "Queue time (worst replica)",
             [(f"max by (quantile) (nv_inference_queue_summary_us{sq}) / 1000", "p{{quantile}}")]),
            (m, "Batch size achieved",
             [(f"sum(rate(nv_inference_count{s}[{RATE}])) / sum(rate(nv_inference_exec_count{s}[{RATE}]))",
               "inferences per execution")]),
        ]
    j = f'{{job="{spec.job}"}}'
    out += [
        ("Server", "Replicas up", [(f"sum(up{j})", "up")]),
        ("Server", "CPU utilisation", [(f"nv_cpu_utilization{j}", "{{instance}}")]),
        ("Server", "CPU memory used", [(f"nv_cpu_memory_used_bytes{j}", "{{instance}}")]),
    ]
    if spec.gpu:
        out += [
            ("Server", "GPU utilisation", [(f"nv_gpu_utilization{j}", "{{instance}} {{gpu_uuid}}")]),
            ("Server", "GPU memory used", [(f"nv_gpu_memory_used_bytes{j}", "{{instance}} {{gpu_uuid}}")]),
        ]
    return out


_UNITS = {"Requests/s": "reqps", "Failures/s by reason": "reqps", "End-to-end latency (worst replica)": "ms",
          "Queue time (worst replica)": "ms", "Batch size achieved": "short", "Replicas up": "short",
          "CPU utilisation": "percentunit", "CPU memory used": "bytes", "GPU utilisation": "percentunit",
          "GPU memory used": "bytes"}


def build_dashboard(spec: MonitoringSpec) -> dict:
    """The dashboard as a JSON-ready dict."""
    from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
    from grafana_foundation_sdk.models import common as common_models
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    ds = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (dashboard.Dashboard(f"dnx: {spec.job} on Triton").uid(f"dnx-{spec.job}"[:40])
             .tags(["dnx", "triton"]).refresh("30s").time("now-1h", "now").editable()
             .description(f"Triton replicas of {spec.job} (written by `dnx deploy kubernetes`); "
                          f"p99 SLO {spec.slo_p99_ms:g} ms")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    row, ids = None, iter(range(1, 10_000))
    for row_title, title, queries in panel_queries(spec):
        if row_title != row:
            board = board.with_row(dashboard.Row(row_title if row_title == "Server" else f"Model {row_title}")
                                   .id(next(ids)))
            row = row_title
        panel = (timeseries.Panel().id(next(ids)).title(title).datasource(ds).unit(_UNITS[title]).min(0).height(7).span(8)
                 .legend(common.VizLegendOptions().show_legend(True).display_mode(common_models.LegendDisplayMode.LIST)
                         .placement(common_models.LegendPlacement.BOTTOM)))
        if title.startswith("End-to-end"):
            panel = panel.description(f"p99 SLO: {spec.slo_p99_ms:g} ms (alert DnxLatencyP99AboveSLO after 10 minutes)")
        for i, (expr, legend) in enumerate(queries):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend)
                                      .ref_id(chr(ord("A") + i)).datasource(ds))
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def dashboard_json(spec: MonitoringSpec) -> str:
    """:func:`build_dashboard` as the text of ``dashboard.json``."""
    return json.dumps(build_dashboard(spec), indent=2, sort_keys=False) + "\n"


def dashboard_queries(doc: dict) -> list[dict]:
    """Every ``{"panel", "expr", "legend"}`` of a dashboard JSON (rows included), for tests and renderers."""
    out = []
    for panel in doc.get("panels", []):
        for sub in [panel, *panel.get("panels", [])]:
            for t in sub.get("targets", []):
                if t.get("expr"):
                    out.append({"panel": sub.get("title"), "expr": t["expr"], "legend": t.get("legendFormat", "")})
    return out
