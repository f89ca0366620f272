"""Labelled images as an SfM-like split (data.kind=labels): sfm_db_from_labels."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.labels import sfm_db_from_labels
from retrieval.data.tuples import validate_mining_setup


def test_sfm_db_from_labels_toy():
    labels = ["a", "b", "a", "c", "a", "b"]
    db = sfm_db_from_labels(labels, seed=1)
    assert db["cluster"] == [0, 1, 0, 2, 0, 1]
    assert db["cids"] == ["0", "1", "2", "3", "4", "5"]
    assert db["qidxs"] == [0, 1, 2, 4, 5]  # image 3 is alone in its label: no query
    assert len(db["pidxs"]) == 5 and db["bbxs"] == [None] * 5
    for q, p in zip(db["qidxs"], db["pidxs"], strict=True):
        assert p != q and labels[p] == labels[q]
    cands = db["candidates"]
    assert sorted(cands[0][:, 0].tolist()) == [2, 4] and (cands[0][:, 1] == 1).all()
    assert sorted(cands[5][:, 0].tolist()) == [1]
    assert cands[3].shape == (0, 2)
    # The db positive is the first candidate, and the split passes the start-up checks.
    assert all(cands[q][0, 0] == p for q, p in zip(db["qidxs"], db["pidxs"], strict=True))
    validate_mining_setup(db, nnum=2, poolsize=6, candidates=cands)
    again = sfm_db_from_labels(labels, seed=1)
    assert all(again[k] == db[k] for k in ("cids", "cluster", "qidxs", "pidxs", "bbxs"))
    assert all(np.array_equal(x, y) for x, y in zip(again["candidates"], cands, strict=True))


def test_sfm_db_from_labels_options():
    labels = [10, 10, 7, 10, 7, 10]
    db = sfm_db_from_labels(labels, positives_per_query=2, cids=list("uvwxyz"), seed=0)
    assert db["cluster"] == labels and db["cids"] == list("uvwxyz")
    # Label 10 has 4 images: 2 positives each; label 7 has 2 images: 1 positive each.
    assert db["qidxs"] == [0, 0, 1, 1, 2, 3, 3, 4, 5, 5]
    for q in (0, 1, 3, 5):
        ps = [p for qq, p in zip(db["qidxs"], db["pidxs"], strict=True) if qq == q]
        assert len(set(ps)) == 2 and q not in ps and all(labels[p] == 10 for p in ps)
    capped = sfm_db_from_labels(labels, max_candidates=1, seed=0)
    assert all(len(c) == 1 for c in capped["candidates"])
    draws = {tuple(sfm_db_from_labels(labels, seed=s)["pidxs"]) for s in range(10)}
    assert len(draws) > 1  # the positives are random draws


def test_sfm_db_from_labels_errors():
    with pytest.raises(ValueError, match="no label has two images"):
        sfm_db_from_labels(["a", "b", "c"])
    with pytest.raises(ValueError, match="2 cids for 3 labels"):
        sfm_db_from_labels(["a", "a", "b"], cids=["x", "y"])
    with pytest.raises(ValueError, match="max_candidates=1 must be >= positives_per_query=2"):
        sfm_db_from_labels(["a", "a", "b"], positives_per_query=2, max_candidates=1)
