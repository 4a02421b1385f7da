"""The issue's measured table as a fixture."""

from __future__ import annotations

import pytest

from dnx.perf.tune.curves import Curve
from tests.perf.tune.objective.helpers import AS_EXPORTED, DNX_DEFAULTS, MODEL_ANALYZER, curve


@pytest.fixture
def issue_table() -> tuple[Curve, Curve, Curve]:
    """(as exported, dnx tune defaults, Model Analyzer) from the issue's table."""
    return (curve("as exported", AS_EXPORTED), curve("dnx tune defaults", DNX_DEFAULTS),
            curve("model analyzer", MODEL_ANALYZER))
