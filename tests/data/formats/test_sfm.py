"""Cirtorch SfM formats: tuple databases, whitening pairs and positives sidecars round-trip."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats as F

Touch = Callable[[list[Path]], None]


def sfm_fixture(root: Path, touch: Touch, name: str = "retrieval-SfM-120k") -> tuple[Path, dict]:
    splits = {
        "train": {
            "cids": ["a0b1c2d3e4f5", "ffeeddccbbaa", "000111222333", "abcabcabcabc"],
            "cluster": [0, 0, 1, 1],
            "qidxs": [0, 2],
            "pidxs": [1, 3],
            "bbxs": [None, [1, 2, 30, 40]],
        },
        "val": {
            "cids": ["999888777666", "555444333222"],
            "cluster": [5, 5],
            "qidxs": [1],
            "pidxs": [0],
            "bbxs": [None],
        },
    }
    path = F.sfm_db_path(root, name)
    F.write_sfm_db(path, splits)
    ims = F.sfm_ims_dir(root, name)
    touch([F.cid2filename(c, ims) for s in splits.values() for c in s["cids"]])
    return path, splits


def test_cid2filename_nests_by_trailing_characters() -> None:
    assert F.cid2filename("0123456789ab", "/ims") == Path("/ims/ab/89/67/0123456789ab")


def test_sfm_db_round_trip_in_cirtorch_layout(tmp_path: Path, touch: Touch) -> None:
    path, splits = sfm_fixture(tmp_path, touch)
    assert path == tmp_path / "train/retrieval-SfM-120k/retrieval-SfM-120k.pkl"
    db = F.load_sfm_db(tmp_path, "retrieval-SfM-120k")
    assert sorted(db) == ["train", "val"]
    train = db["train"]
    assert train.cids == splits["train"]["cids"]
    np.testing.assert_array_equal(train.cluster, [0, 0, 1, 1])
    np.testing.assert_array_equal(train.qidxs, [0, 2])
    np.testing.assert_array_equal(train.pidxs, [1, 3])
    assert train.bbxs == [None, (1.0, 2.0, 30.0, 40.0)]
    expected = tmp_path / "train/retrieval-SfM-120k/ims/f5/e4/d3/a0b1c2d3e4f5"
    assert train.image_paths[0] == expected
    # the file is a plain pickle of builtins, readable by cirtorch's own pickle.load
    with path.open("rb") as handle:
        raw = pickle.load(handle)
    assert raw["val"]["qidxs"] == [1] and raw["train"]["bbxs"][0] is None
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_sfm_db_problems_name_file_entries_and_count(tmp_path: Path, touch: Touch) -> None:
    path, splits = sfm_fixture(tmp_path, touch)
    splits["train"]["pidxs"] = [1, 7]  # out of range
    del splits["val"]["cluster"]
    F.write_sfm_db(path, {"train": splits["train"]})
    with open(path, "rb") as handle:
        db = pickle.load(handle)
    db["val"] = {k: v for k, v in splits["val"].items()}
    with open(path, "wb") as handle:
        pickle.dump(db, handle)
    (F.sfm_ims_dir(tmp_path, "retrieval-SfM-120k") / "aa").rename(tmp_path / "gone")
    with pytest.raises(F.DatasetFormatError) as info:
        F.read_sfm_db(path)
    message = str(info.value)
    assert str(path) in message
    assert "3 problem(s)" in message
    assert "'train'.pidxs[1] = 7 is out of range [0, 4)" in message
    assert "split 'val': missing key(s) ['cluster']" in message
    assert "'train' image 1: image file missing" in message and "ffeeddccbbaa" in message


def test_sfm_db_many_problems_are_summarised(tmp_path: Path) -> None:
    cids = [f"{i:012d}" for i in range(9)]
    path = tmp_path / "db.pkl"
    F.write_sfm_db(
        path, {"train": {"cids": cids, "cluster": list(range(9)), "qidxs": [0], "pidxs": [1]}}
    )
    with pytest.raises(F.DatasetFormatError) as info:
        F.read_sfm_db(path)
    message = str(info.value)
    assert message.startswith(f"9 problem(s) in {path}:")
    assert message.count("image file missing") == 5 and "... and 4 more" in message
    assert F.read_sfm_db(path, check_images=False)["train"].bbxs == [None]


def test_sfm_db_self_positive_and_length_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "db.pkl"
    F.write_sfm_db(
        path,
        {
            "train": {
                "cids": ["aaaaaa", "bbbbbb"],
                "cluster": [0],
                "qidxs": [0, 1],
                "pidxs": [0, 0],
                "bbxs": [None, None],
            }
        },
    )
    with pytest.raises(F.DatasetFormatError) as info:
        F.read_sfm_db(path, check_images=False)
    assert "1 cluster ids for 2 cids" in str(info.value)
    assert "pair 0 uses image 0 as its own positive" in str(info.value)


def test_missing_sfm_db_names_location_and_download_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        F.load_sfm_db(tmp_path, "retrieval-SfM-120k")
    message = str(info.value)
    assert "train/retrieval-SfM-120k/retrieval-SfM-120k.pkl" in message
    assert "data.root" in message
    assert f"python -m retrieval.data download retrieval-sfm-120k --root {tmp_path}" in message


def test_whiten_pairs_round_trip_and_range_check(tmp_path: Path, touch: Touch) -> None:
    root = tmp_path / "train" / "retrieval-SfM-30k"
    path = F.sfm_whiten_path(tmp_path, "retrieval-SfM-30k")
    F.write_whiten_pairs(path, ["c00001", "c00002", "c00003"], [0, 2], [1, 0])
    touch([F.cid2filename(c, root / "ims") for c in ["c00001", "c00002", "c00003"]])
    pairs = F.read_whiten_pairs(path)
    assert pairs.cids == ["c00001", "c00002", "c00003"]
    np.testing.assert_array_equal(pairs.qidxs, [0, 2])
    np.testing.assert_array_equal(pairs.pidxs, [1, 0])
    assert pairs.image_paths[1] == root / "ims/02/00/c0/c00002"
    F.write_whiten_pairs(path, ["c00001"], [0], [3])
    with pytest.raises(F.DatasetFormatError, match=r"pidxs\[0\] = 3 is out of range \[0, 1\)"):
        F.read_whiten_pairs(path)


def test_positives_sidecar_round_trip(tmp_path: Path) -> None:
    candidates = [[(1, 40), (2, 15)], [], [(0, 40)]]
    path = tmp_path / "train-positives.npz"
    F.write_positives_sidecar(path, candidates)
    with np.load(path) as data:
        np.testing.assert_array_equal(data["offsets"], [0, 2, 2, 3])
        np.testing.assert_array_equal(data["indices"], [1, 2, 0])
        np.testing.assert_array_equal(data["inliers"], [40, 15, 40])
    sidecar = F.read_positives_sidecar(path, n_images=3)
    assert len(sidecar) == 3
    assert sidecar[0] == [(1, 40), (2, 15)] and sidecar[1] == []
    assert sidecar.to_lists() == candidates


def test_positives_sidecar_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    F.write_positives_sidecar(path, [[(5, 10)], [(0, 3)]])
    with pytest.raises(F.DatasetFormatError, match=r"indices\[0\] = 5 is out of range \[0, 2\)"):
        F.read_positives_sidecar(path)
    F.write_positives_sidecar(path, [[(1, 10)], [(0, 3)]])
    with pytest.raises(F.DatasetFormatError, match="covers 2 images but the split has 4"):
        F.read_positives_sidecar(path, n_images=4)
    np.savez(path, offsets=np.array([0, 1]), indices=np.array([0]))
    with pytest.raises(F.DatasetFormatError, match=r"missing array\(s\) \['inliers'\]"):
        F.read_positives_sidecar(path)
