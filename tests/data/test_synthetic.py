"""The synthetic world: determinism, real-format readers, label rules, visibility and caching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.data import formats
from retrieval.data import synthetic as S

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
        assert S.mask_box(mask) == tuple(entry["bbx"])
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


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


def _wall(z: float, half: float, alpha: np.ndarray | None = None) -> S.Plane:
    """Square wall in the plane z, facing +z, spanning [-half, half] in x and [0, 2 half] in y."""
    return S.Plane(
        np.array([-half, 0.0, z]), np.array([2 * half, 0, 0.0]), np.array([0, 2 * half, 0.0]), alpha
    )


def test_visibility_two_plane_scene():
    back, front = _wall(0.0, 20.0), _wall(3.0, 1.0)  # front: x in [-1, 1], y in [0, 2] at z=3
    cam = S.look_at(np.array([0.0, 1.0, 10.0]), np.array([0.0, 1.0, 0.0]), 100.0, 200, 200)
    points = np.array(
        [
            [0.0, 1.0, 0.0],  # on the back wall, behind the front plane
            [3.0, 1.0, 0.0],  # on the back wall, clear
            [0.0, 1.0, 3.0],  # on the front plane itself
            [-15.0, 1.0, 0.0],  # on the back wall but outside the image (x = -50 px)
        ]
    )
    normals = np.tile([0.0, 0.0, 1.0], (4, 1))
    vis = S.visible_points(points, normals, cam, [back, front])
    assert vis.tolist() == [False, True, True, False]
    # Facing away from the camera: not seen even when in view.
    assert not S.visible_points(points[1:2], -normals[1:2], cam, [back, front])[0]
    # A hole in the front plane's mask lets the point through.
    holed = np.ones((4, 4), bool)
    holed[1:3, 1:3] = False
    vis = S.visible_points(points[:1], normals[:1], cam, [back, _wall(3.0, 1.0, holed)])
    assert vis[0]
    # A camera behind the back wall sees nothing of its front.
    behind = S.look_at(np.array([0.0, 1.0, -10.0]), np.array([0.0, 1.0, 0.0]), 100.0, 200, 200)
    assert not S.visible_points(points, normals, behind, [back, front]).any()


def test_projection_and_look_at_conventions():
    cam = S.look_at(np.array([0.0, 0.0, 10.0]), np.zeros(3), 100.0, 200, 100)
    uv, z = cam.project(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    assert np.allclose(uv[0], [100, 50]) and np.isclose(z[0], 10)
    # Looking along -z with +y up: world +x is image right, +y is image up.
    assert np.allclose(uv[1], [110, 40])


def test_rendered_mask_agrees_with_point_visibility():
    rng = np.random.default_rng(11)
    lm = S.make_landmark(rng, S.motif_bank(0), 800)
    checked = 0
    while checked < 4:
        view = S.sample_view(rng, lm, 160, "db")
        if view is None:
            continue
        _, mask = S.render_view(lm, view)
        vis = S.visible_points(
            lm.points, lm.normals, view.camera, lm.planes + [s.plane for s in view.occluders]
        )
        if vis.sum() < 20:
            continue
        uv = view.camera.project(lm.points[vis])[0].astype(int)
        assert mask[uv[:, 1], uv[:, 0]].mean() > 0.9
        checked += 1


def test_pair_geometry_scale_and_angle():
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near = S.look_at(np.array([0.0, 0.0, 10.0]), np.zeros(3), 100.0, 64, 64)
    far = S.look_at(np.array([0.0, 0.0, 20.0]), np.zeros(3), 100.0, 64, 64)
    side = S.look_at(np.array([10.0, 0.0, 0.0]), np.zeros(3), 100.0, 64, 64)
    vis = np.ones((3, 2), bool)
    depth = np.array([[10.0, 10.0], [20.0, 20.0], [10.0, 9.0]])
    cams = [near, far, side]
    geo = S.pair_geometry(vis, depth, cams, vis, depth, cams, points)
    assert np.isclose(geo.scale[0, 1], 2.0) and np.isclose(geo.scale[1, 0], 2.0)
    # Both seen from the shared points' centroid (0.5, 0, 0).
    assert np.isclose(geo.angle[0, 1], np.degrees(np.arctan(0.05) - np.arctan(0.025)))
    # From the centroid (0.5, 0, 0): near is at (-0.5, 0, 10), side at (9.5, 0, 0).
    expected = np.degrees(np.arccos(-0.5 * 9.5 / (np.hypot(0.5, 10) * 9.5)))
    assert np.isclose(geo.angle[0, 2], expected)
    assert geo.shared[0, 2] == 2 and np.allclose(geo.overlap, 1.0)


def test_queries_complete_a_sparse_database():
    """With a one-view database, query selection adds views until each query qualifies."""
    rng = np.random.default_rng(5)
    lm = S.make_landmark(rng, S.motif_bank(0), 400)
    db = S._db_shots(rng, lm, 1, 96)
    queries = S._choose_queries(rng, lm, db, 2, 96)
    assert len(queries.views) == 2 and len(db.views) > 1
    qvis, qdepth, qcams = queries.arrays()
    dvis, ddepth, dcams = db.arrays()
    geo = S.pair_geometry(qvis, qdepth, qcams, dvis, ddepth, dcams, lm.points)
    labels = S.classify_pairs(geo.overlap, geo.angle, geo.scale)
    assert ((labels == S.EASY).any(1) & (labels == S.HARD).any(1)).all()


def test_config_validation():
    with pytest.raises(ValueError, match="views_per_landmark"):
        S.SyntheticConfig(views_per_landmark=1)
    with pytest.raises(ValueError, match="max_side"):
        S.SyntheticConfig(max_side=12.5)
    assert S.SyntheticConfig(seed=1).key() != S.SyntheticConfig(seed=2).key()
    assert S.SyntheticConfig(workers=1).key() == S.SyntheticConfig(workers=2).key()


def test_classify_pairs_thresholds():
    labels = S.classify_pairs(
        np.array([0.6, 0.6, 0.6, 0.3, 0.05, 0.5]),
        np.array([10, 40, 10, 10, 5, 30.0]),
        np.array([1.2, 1.2, 1.8, 1.0, 1.0, 1.5]),
    )
    assert labels.tolist() == [S.EASY, S.HARD, S.HARD, S.HARD, S.JUNK, S.EASY]


# --------------------------------------------------------------------------------------------------
# Cache and command line
# --------------------------------------------------------------------------------------------------

TINY = dict(
    n_train_landmarks=2,
    n_val_landmarks=1,
    n_test_landmarks=1,
    views_per_landmark=6,
    queries_per_landmark=1,
    max_side=96,
    points_per_landmark=300,
    workers=1,
)


def test_ensure_world_reuses_cache_and_regenerates_on_change(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    assert S.ensure_world(root, TINY) == root
    stamp = (root / "world.json").stat().st_mtime_ns
    image = next((root / "test/synthetic-rox/jpg").glob("*.jpg"))

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached world")

    monkeypatch.setattr(S, "generate_world", fail)
    assert S.ensure_world(root, S.SyntheticConfig(**TINY)) == root
    assert S.ensure_world(root, {**TINY, "workers": 2}) == root  # workers: same world
    assert (root / "world.json").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    old_bytes = image.read_bytes()
    S.ensure_world(root, {**TINY, "seed": 1})
    assert S.read_world_info(root)["params"]["seed"] == 1
    assert image.read_bytes() != old_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no temp folders left


def test_ensure_world_default_root_and_safety(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_DATA", str(tmp_path / "data"))
    config = S.SyntheticConfig(**TINY)
    assert S.default_root(config) == tmp_path / "data" / "synthetic" / config.key()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        S.ensure_world(busy, TINY)
    assert (busy / "mine.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="unknown synthetic world parameter"):
        S.as_config({"seeds": 1})


def test_cli_synthetic_and_download(tmp_path, capsys, monkeypatch):
    from retrieval.data import __main__ as cli

    args = [
        "synthetic",
        "--root",
        str(tmp_path / "w"),
        "--train-landmarks",
        "2",
        "--val-landmarks",
        "1",
        "--test-landmarks",
        "1",
        "--views",
        "6",
        "--queries",
        "1",
        "--max-side",
        "96",
        "--points",
        "300",
        "--workers",
        "1",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "train: 12 images of 2 landmarks" in out and "generated" in out
    assert cli.main(args) == 0
    assert "reused from cache" in capsys.readouterr().out
    import retrieval.data.download as download

    seen = []
    monkeypatch.setattr(download, "download_main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["download", "roxford5k", "--root", "X"]) == 0
    assert seen == [["roxford5k", "--root", "X"]]
