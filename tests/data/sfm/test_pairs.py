"""Pairs to match: all of a small set, else each image's top-k by descriptor (checked against a
brute-force ranking)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.sfm.pairs import (
    choose_pairs,
    exhaustive_pairs,
    read_pairs,
    retrieval_pairs,
    write_pairs,
)


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exhaustive_pairs_are_every_unordered_pair():
    pairs = exhaustive_pairs(5)
    assert len(pairs) == 10
    assert {tuple(p) for p in pairs.tolist()} == {(i, j) for i in range(5) for j in range(i + 1, 5)}


def test_retrieval_pairs_are_the_brute_force_top_k_made_unordered():
    x = unit_rows(40, 16)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    k = 3
    expected = set()
    for i, row in enumerate(np.argsort(-sims, axis=1)[:, :k]):
        expected |= {(min(i, int(j)), max(i, int(j))) for j in row}
    pairs = retrieval_pairs(x, k)
    assert {tuple(p) for p in pairs.tolist()} == expected
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert len(pairs) <= 40 * k  # grows as N*k, not N^2


def test_choose_pairs_is_exhaustive_up_to_the_limit():
    x = unit_rows(12, 8)
    assert len(choose_pairs(x, k=2, exhaustive_max=12)) == 66
    assert len(choose_pairs(x, k=2, exhaustive_max=11)) < 66


def test_choose_pairs_refuses_non_finite_descriptors():
    x = unit_rows(4, 8)
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="finite N x D"):
        choose_pairs(x, k=2, exhaustive_max=0)


def test_pairs_file_round_trips(tmp_path):
    names = ["a.jpg", "b.jpg", "c.jpg"]
    pairs = np.array([[0, 2], [1, 2]])
    path = tmp_path / "pairs.txt"
    write_pairs(path, pairs, names)
    assert path.read_text() == "a.jpg c.jpg\nb.jpg c.jpg\n"
    np.testing.assert_array_equal(read_pairs(path, names), pairs)
