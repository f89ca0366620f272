"""FAISS indexes: IVF-PQ on a database too small to train it falls back to the exact index."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from retrieval.index import PQ_CENTROIDS, search


def rows(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivfpq_on_a_50_image_database_falls_back_to_exact_search_with_a_warning(caplog):
    database, queries = rows(50), rows(5, seed=1)
    with caplog.at_level(logging.WARNING, logger="retrieval.index"):
        scores, ranks = search(database, queries, k=10, index_type="ivfpq")
    assert f"at least {PQ_CENTROIDS}" in caplog.text and "exact" in caplog.text
    exact_scores, exact_ranks = search(database, queries, k=10, index_type="flat")
    np.testing.assert_array_equal(ranks, exact_ranks)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-6)


def test_ivfpq_with_enough_images_is_used(caplog):
    with caplog.at_level(logging.WARNING, logger="retrieval.index"):
        _, ranks = search(rows(PQ_CENTROIDS * 2), rows(3, seed=1), k=5, index_type="ivfpq")
    assert ranks.shape == (3, 5) and "exact" not in caplog.text


def test_ivfpq_with_a_pq_m_that_does_not_divide_the_dimension_is_refused():
    with pytest.raises(ValueError, match="pq_m=5 must divide the descriptor dimension 32"):
        search(rows(600), rows(2), index_type="ivfpq", pq_m=5)


class _FakeGpuIndex:
    """Stands for a faiss-gpu index: refuses a k above the limit, as GpuIndex does."""

    searched: list[int] = []

    def __init__(self, index, limit: int) -> None:
        self.index, self.limit = index, limit

    def add(self, x) -> None:
        self.index.add(x)

    def search(self, x, k: int):
        assert k <= self.limit, f"faiss-gpu: k={k} above {self.limit}"
        _FakeGpuIndex.searched.append(k)
        return self.index.search(x, k)


def test_a_k_above_the_gpu_limit_is_searched_on_the_cpu(monkeypatch):
    import faiss

    from retrieval import index as index_module

    limit = 4  # stands for faiss-gpu's 2048
    monkeypatch.setattr(index_module, "GPU_MAX_K", limit)
    monkeypatch.setattr(index_module, "gpu_available", lambda: True)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: None, raising=False)
    monkeypatch.setattr(
        faiss, "index_cpu_to_gpu", lambda res, dev, idx: _FakeGpuIndex(idx, limit), raising=False
    )
    database, queries = rows(10), rows(3, seed=1)
    expected = np.argsort(-(queries @ database.T), axis=1, kind="stable")
    _FakeGpuIndex.searched.clear()
    _, full = search(database, queries)  # k = N = 10 > 4: the CPU, no error
    np.testing.assert_array_equal(full, expected)
    assert _FakeGpuIndex.searched == []
    _, top = search(database, queries, k=3)  # within the limit: the GPU index
    np.testing.assert_array_equal(top, expected[:, :3])
    assert _FakeGpuIndex.searched == [3]
