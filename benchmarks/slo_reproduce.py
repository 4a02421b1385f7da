#!/usr/bin/env python3
"""Does a reported SLO rate reproduce? Independent LoadGen Server runs at the rate and at 1.2x it.

    PYTHONPATH=$PWD python benchmarks/slo_reproduce.py --repository model_repository \
        --report perf/results/<run>/report.json --model densenet121_openvino_int8 [--factor 1.2] [--seed 1]

Reads ``slo_rate`` and ``p99_bound_ms`` from a ``dnx perf --scenario server`` report, launches a
local server on ``--repository`` and runs LoadGen's Server scenario at the rate and at ``factor``
times it, with another arrival schedule (``--seed``) than the search used. The claim holds when
the first is VALID and the second is not (or the second is "too short to decide", stated as such).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dnx.perf.served import inspect_server, launched_server
from dnx.perf.slo.loadgen import ScenarioSettings, run_loadgen
from dnx.perf.slo.options import P99_QUERIES
from dnx.perf.slo.targets import GrpcTarget, sample_inputs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repository", required=True)
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--factor", type=float, default=1.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-duration-ms", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    rec = json.loads(a.report.read_text())["models"][a.model]
    rate, bound = rec["slo_rate"], rec["p99_bound_ms"]
    out = a.out or a.report.parent / "reproduce"
    results = {}
    with launched_server(a.repository, [a.model], out / "tritonserver.log") as server:
        (model,) = inspect_server(server.grpc_url, "grpc", [a.model])
        target = GrpcTarget(server.grpc_url, model, sample_inputs(model))
        try:
            for label, r in (("at", rate), (f"x{a.factor:g}", rate * a.factor)):
                n = max(P99_QUERIES, int(r * a.min_duration_ms / 1000))
                s = run_loadgen(target, ScenarioSettings(scenario="server", target_qps=r, target_latency_ms=bound,
                                                         min_duration_ms=a.min_duration_ms, min_query_count=n,
                                                         seed=a.seed), out / f"{label}_{r:.2f}qps")
                results[label] = {"rate": r, **s.to_dict()}
                print(f"{a.model} {label} {r:.2f} q/s: {s.verdict} (p99 {s.p('99'):.1f} ms, bound {bound:g} ms, "
                      f"{s.processed or '?'} queries)", flush=True)
        finally:
            target.close()
    (out / "reproduce.json").write_text(json.dumps(results, indent=2) + "\n")
    ok = results["at"]["verdict"] == "valid" and results[f"x{a.factor:g}"]["verdict"] != "valid"
    print("reproduced" if ok else "not reproduced")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
