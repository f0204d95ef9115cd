"""bench/graph_import.py at its tiny size, so the benchmark cannot rot (no target asserted here)."""
from __future__ import annotations

import math

import pytest

from bench import graph_import
from tests.conftest import require

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


def test_graph_import_benchmark_produces_figures(tmp_path) -> None:
    from bench.importing import CORPUS

    require(any(CORPUS.glob("*.box")), f"the mail corpus is not at {CORPUS}")
    result = graph_import.run(tmp_path, "tiny", log=lambda _line: None)
    assert result["messages"] == graph_import.SIZES["tiny"] and result["bytes"] > 0
    for key in ("raw_seconds", "raw4_seconds", "client_seconds", "product_seconds", "ratio", "ratio_raw4",
                "product_ratio"):
        assert isinstance(result[key], float) and not math.isnan(result[key]) and result[key] > 0
    assert len(result["latency_seconds"]) == 5 and all(x > 0 for x in result["latency_seconds"])
    assert all(isinstance(line, str) for line in graph_import.report(result))
