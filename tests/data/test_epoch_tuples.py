"""EpochTuples: one epoch's tuples, their checks and their .npz round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.data.epoch_tuples import EpochTuples


def test_epoch_tuples_save_load_round_trip(tmp_path):
    tuples = EpochTuples(
        query=torch.tensor([3, 1]),
        positive=[4, 0],
        negatives=torch.tensor([[5, 6], [7, 2]]),
        neg_sims=torch.tensor([[0.5, 0.25], [0.125, -1.0]]),
        pos_sims=[0.75, 0.5],
        epoch=7,
        cids=[f"c{i}" for i in range(8)],
    )
    path = tmp_path / "tuples" / "epoch7.npz"
    tuples.save(path)
    back = EpochTuples.load(path)
    assert back.epoch == 7 and back.cids == tuples.cids and back.nnum == 2 and len(back) == 2
    for key in ("query", "positive", "negatives", "neg_sims", "pos_sims"):
        np.testing.assert_array_equal(getattr(back, key), getattr(tuples, key))
    assert back.image_indices(1) == [1, 0, 7, 2]

    bare = EpochTuples([0], [1], [[2, 3, 4]])
    bare.save(tmp_path / "bare.npz")
    back = EpochTuples.load(tmp_path / "bare.npz")
    assert back.neg_sims is None and back.epoch is None and back.cids is None
    assert back.negatives.tolist() == [[2, 3, 4]]
    assert list(tmp_path.glob("**/*.tmp")) == []


def test_epoch_tuples_errors(tmp_path):
    with pytest.raises(ValueError, match="Q x nnum negatives"):
        EpochTuples([0, 1], [1], [[2], [3]])
    with pytest.raises(FileNotFoundError, match="Epoch tuples file not found"):
        EpochTuples.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match=r"not an EpochTuples file: missing \['negatives'"):
        EpochTuples.load(tmp_path / "other.npz")
