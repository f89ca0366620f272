"""The generated world: determinism and every file read back by the real-format readers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.data import formats
from retrieval.data import synthetic as S
from retrieval.data.masks import mask_box

SMALL = dict(
    n_train_landmarks=6,
    n_val_landmarks=2,
    n_test_landmarks=3,
    views_per_landmark=8,
    queries_per_landmark=2,
    max_side=128,
    points_per_landmark=500,
)


def small(seed: int = 3, **kw) -> S.SyntheticConfig:
    return S.SyntheticConfig(seed=seed, **{**SMALL, "workers": 1, **kw})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    S.generate_world(root, small())
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(world, tmp_path):
    again = tmp_path / "again"
    S.generate_world(again, small(workers=2))
    first, second = _files(world), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) > 100
    assert [k for k in first if first[k] != second[k]] == []


def test_another_seed_gives_other_images(world, tmp_path):
    other = tmp_path / "other"
    S.generate_world(
        other, small(seed=4, n_train_landmarks=1, n_val_landmarks=1, n_test_landmarks=1)
    )
    ours = {p.read_bytes() for p in (world / "test/synthetic-rox/jpg").glob("*.jpg")}
    theirs = {p.read_bytes() for p in (other / "test/synthetic-rox/jpg").glob("*.jpg")}
    assert ours.isdisjoint(theirs)
    cids = formats.read_sfm_db(formats.sfm_db_path(other, "synthetic-sfm"))["train"].cids
    ours_cids = formats.read_sfm_db(formats.sfm_db_path(world, "synthetic-sfm"))["train"].cids
    assert set(cids).isdisjoint(ours_cids)


# --------------------------------------------------------------------------------------------------
# Real-format readers
# --------------------------------------------------------------------------------------------------


def test_sfm_db_reads_back_with_valid_pairs(world):
    splits = formats.load_sfm_db(world, "synthetic-sfm")  # checks every image file exists
    train, val = splits["train"], splits["val"]
    assert len(train) == 6 * 8 and len(val) == 2 * 8
    assert sorted(set(train.cluster)) == list(range(6))
    assert sorted(set(val.cluster)) == [6, 7]
    assert len(train.qidxs) >= len(train) // 2
    assert np.all(train.cluster[train.qidxs] == train.cluster[train.pidxs])
    assert np.all(train.qidxs != train.pidxs)
    assert train.bbxs == [None] * len(train.qidxs)
    for cid in train.cids[:3]:
        assert len(cid) == 32 and int(cid, 16) >= 0
    with Image.open(train.image_paths[0]) as im:
        assert im.format == "JPEG" and max(im.size) == 128
    whiten = formats.read_whiten_pairs(formats.sfm_whiten_path(world, "synthetic-sfm"))
    assert whiten.cids == train.cids and len(whiten.qidxs) > 0
    assert np.all(train.cluster[whiten.qidxs] == train.cluster[whiten.pidxs])


def test_positive_pairs_follow_the_overlap_and_scale_rules(world):
    folder = formats.sfm_dir(world, "synthetic-sfm")
    train = formats.load_sfm_db(world, "synthetic-sfm")["train"]
    geometry = json.loads((folder / "synthetic-sfm-geometry.json").read_text())["train"]
    pairs = geometry["pairs"]
    seen = np.array(geometry["points_seen"])
    key = {(q, d): k for k, (q, d) in enumerate(zip(pairs["query"], pairs["db"], strict=True))}
    for q, p in zip(train.qidxs, train.pidxs, strict=True):
        k = key[(int(q), int(p))]
        assert pairs["shared"][k] / seen[q] >= 0.2
        assert pairs["scale"][k] <= 1.5
    # Every image with a qualifying partner is a query.
    ok = {
        q
        for q, d, s, sc in zip(
            pairs["query"], pairs["db"], pairs["shared"], pairs["scale"], strict=True
        )
        if s / seen[q] >= 0.2 and sc <= 1.5
    }
    assert ok == set(int(q) for q in train.qidxs)
    # The sidecar lists every same-landmark image sharing points, with the shared count.
    sidecar = formats.read_positives_sidecar(folder / "synthetic-sfm-positives.npz", len(train))
    for q in range(len(train)):
        for j, inliers in sidecar[q]:
            assert train.cluster[j] == train.cluster[q] and j != q
            assert pairs["shared"][key[(q, j)]] == inliers > 0
    assert sum(len(sidecar[q]) for q in range(len(train))) == len(pairs["query"])


def test_revisitop_gnd_reads_back(world):
    bench = formats.load_revisitop(world, "synthetic-rox")
    assert len(bench.images) >= 3 * 8  # query selection may add views
    assert len(bench.queries) == 3 * 2
    names = {p.stem for p in bench.images}
    assert names.isdisjoint(p.stem for p in bench.queries)  # queries are not in the database
    for q, entry in enumerate(bench.gnd):
        assert entry["easy"].size >= 1 and entry["hard"].size >= 1
        lm = bench.queries[q].stem.split("_")[1]
        for key in ("easy", "hard", "junk"):
            assert all(bench.images[i].stem.split("_")[1] == lm for i in entry[key])
        with Image.open(bench.queries[q]) as im:
            w, h = im.size
        x1, y1, x2, y2 = bench.query_boxes[q]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_labels_rebuild_from_exported_geometry(world):
    """Documented rule: easy = overlap >= .5, angle <= 30, scale <= 1.5; junk = overlap < .1."""
    gnd = formats.load_pickle(formats.gnd_path(world, "synthetic-rox"))["gnd"]
    data = json.loads((world / "test/synthetic-rox/geometry.json").read_text())
    pairs = data["pairs"]
    rebuilt = [{"easy": set(), "hard": set(), "junk": set()} for _ in gnd]
    for q, d, shared, n_q, angle, scale in zip(
        *(pairs[c] for c in ("query", "db", "shared", "query_points", "angle", "scale")),
        strict=True,
    ):
        overlap = shared / n_q
        if overlap < 0.1:
            key = "junk"
        elif overlap >= 0.5 and angle <= 30 and scale <= 1.5:
            key = "easy"
        else:
            key = "hard"
        rebuilt[q][key].add(d)
    for q, entry in enumerate(gnd):
        for key in ("easy", "hard", "junk"):
            assert set(entry[key]) == rebuilt[q][key], (q, key)
    assert data["rule"]["easy_max_angle"] == 30.0


def test_easy_and_hard_differ_in_geometry(world):
    pairs = json.loads((world / "test/synthetic-rox/geometry.json").read_text())["pairs"]
    overlap = np.array(pairs["shared"]) / np.array(pairs["query_points"])
    labels = S.classify_pairs(overlap, np.array(pairs["angle"]), np.array(pairs["scale"]))
    easy, hard = labels == S.EASY, labels == S.HARD
    angle, log_scale = np.array(pairs["angle"]), np.log(pairs["scale"])
    # Hard positives: a stronger viewpoint change (median) and scale change, or less overlap.
    assert np.median(angle[hard]) > np.median(angle[easy]) + 15
    assert log_scale[hard].mean() > log_scale[easy].mean()
    assert overlap[hard].min() < 0.5 <= overlap[easy].min()


def test_masks_match_images_and_query_boxes(world):
    folder = world / "test/synthetic-rox"
    gnd = formats.load_pickle(formats.gnd_path(world, "synthetic-rox"))
    for name in gnd["imlist"][:5] + gnd["qimlist"]:
        with (
            Image.open(folder / "jpg" / f"{name}.jpg") as im,
            Image.open(folder / "masks" / f"{name}.png") as mask,
        ):
            assert im.size == mask.size and mask.mode == "L"
    for name, entry in zip(gnd["qimlist"], gnd["gnd"], strict=True):
        mask = np.asarray(Image.open(folder / "masks" / f"{name}.png")) > 0
        assert mask_box(mask) == tuple(entry["bbx"])
    train = formats.load_sfm_db(world, "synthetic-sfm")["train"]
    mask_path = formats.cid2filename(train.cids[0], world / "train/synthetic-sfm/masks")
    assert mask_path.with_suffix(".png").is_file()


def test_labels_and_ukbench_read_back(world):
    labels = formats.read_gldv2_train(world / "train/synthetic-labels/train.csv", check_images=True)
    train = formats.load_sfm_db(world, "synthetic-sfm")["train"]
    assert len(labels.ids) == len(train)
    assert np.array_equal(labels.landmark_ids, train.cluster)
    linked, original = labels.image_paths[0], train.image_paths[0]
    assert linked.read_bytes() == original.read_bytes()
    assert os.stat(linked).st_ino == os.stat(original).st_ino  # a hardlink, not a copy
    bench = formats.load_ukbench(formats.test_dir(world, "synthetic-ukbench"))
    assert len(bench.images) == 3 * 4
    assert [p.name for p in bench.images[:2]] == ["ukbench00000.jpg", "ukbench00001.jpg"]


def test_world_json_describes_the_world(world):
    info = S.read_world_info(world)
    assert info["hash"] == small().key() and info["version"] == S.VERSION
    assert info["params"]["seed"] == 3 and "workers" not in info["params"]
    assert info["stats"]["test"]["queries"] == 6
    assert info["stats"]["sfm"]["train"]["images"] == 48
