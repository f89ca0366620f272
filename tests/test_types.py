"""Plain records: a benchmark checks its protocol and the lengths of its query lists."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.types import RetrievalBenchmark


def test_benchmark_rejects_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'rox'; use one of revisited"):
        RetrievalBenchmark("x", [], [], [], [], "rox")


def test_benchmark_needs_one_box_and_gnd_per_query() -> None:
    with pytest.raises(ValueError, match="1 queries, 0 boxes and 1 gnd entries"):
        RetrievalBenchmark("x", [], ["q.jpg"], [], [{}], "oxford")


def test_query_in_db_only_with_database_queries() -> None:
    gnd = [{"ok": np.array([1]), "junk": np.array([0])}]
    bench = RetrievalBenchmark("x", ["a", "b"], ["a"], [None], gnd, "ukbench")
    assert not bench.query_in_db
    bench.query_db_index = np.array([0])
    assert bench.query_in_db
    bench.query_db_index = np.array([-1])
    assert not bench.query_in_db
