"""``dnx perf --scenario server|single-stream|offline``: open-loop measurement with MLPerf LoadGen.

:mod:`.summary` (LoadGen's summary file, pure), :mod:`.search` (the SLO rate search, pure),
:mod:`.loadgen` (one LoadGen test against a target), :mod:`.targets` (a served model over gRPC,
async), :mod:`.options`, :mod:`.report`, :mod:`.run` (:func:`run_slo`, what the command calls).
"""

from dnx.perf.slo.loadgen import SCENARIOS, ScenarioSettings, run_loadgen
from dnx.perf.slo.options import SloOptions
from dnx.perf.slo.run import SloRun, run_slo
from dnx.perf.slo.search import Point, SearchResult, search_rate
from dnx.perf.slo.summary import LoadGenSummary, parse_summary

__all__ = ["LoadGenSummary", "Point", "SCENARIOS", "ScenarioSettings", "SearchResult", "SloOptions", "SloRun",
           "parse_summary", "run_loadgen", "run_slo", "search_rate"]
