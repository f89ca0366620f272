"""COLMAP on rendered views of synthetic landmarks, against the world's own geometry: recovered
positives share true 3D points (precision), and no model mixes landmarks (purity).

The world's facade landmarks are used. Its corner, box and tower landmarks repeat one texture on
several walls, which COLMAP (like any pairwise-verified SfM) folds onto each other: the
doppelganger failure; ``python bench/bench_sfm.py --quality`` measures it on every kind.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats
from retrieval.data.sfm import SfmOptions, build_sfm_dataset
from retrieval.data.synthetic import SyntheticConfig, ensure_world
from retrieval.data.synthetic.landmarks import make_landmark
from retrieval.data.synthetic.motifs import motif_bank
from retrieval.data.synthetic.shots import _SPLIT_CODES

from .conftest import mean_colour

pycolmap = pytest.importorskip("pycolmap", reason="pip install -e '.[sfm]' for COLMAP's bindings")

SEED, N_LANDMARKS, FACADES = 2, 6, (2, 4, 5)  # seed 2's training landmarks 2, 4, 5 are facades
OPTIONS = SfmOptions(
    name="syn",
    max_side=640,  # where SIFT finds enough on the rendered walls
    max_features=2048,
    exhaustive_max=1000,
    min_model_size=2,
    init_min_inliers=50,  # COLMAP's 100 / 16 degrees / 30 suit large photos, not 640 px renders
    init_min_tri_angle=8.0,
    abs_pose_min_inliers=15,
    val_fraction=0.0,
    num_threads=2,
)


def landmark_kind(index: int) -> str:
    rng = np.random.default_rng([SEED, _SPLIT_CODES["train"], index])
    return make_landmark(rng, motif_bank(SEED), 1200).kind


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The world, its facade photos in a folder, and one SfM run on them (once per session)."""
    assert [landmark_kind(i) for i in FACADES] == ["facade"] * 3, "the world generator changed"
    base = tmp_path_factory.mktemp("synthetic_sfm")
    config = SyntheticConfig(
        seed=SEED,
        n_train_landmarks=N_LANDMARKS,
        n_val_landmarks=0,
        n_test_landmarks=1,
        views_per_landmark=10,
        queries_per_landmark=1,
        max_side=640,
        workers=2,
    )
    world = ensure_world(base / "world", config)
    truth = formats.load_sfm_db(world, "synthetic-sfm")["train"]
    photos = base / "photos"
    photos.mkdir()
    for cid, path, landmark in zip(truth.cids, truth.image_paths, truth.cluster, strict=True):
        if landmark in FACADES:
            os.link(path, photos / f"{cid}.jpg")
    report = build_sfm_dataset(photos, base / "out", mean_colour, OPTIONS)
    return world, truth, base / "out", report


def world_rows(out: Path, truth) -> np.ndarray:
    """For each image of the written training set, its row in the world's training split."""
    folder = formats.sfm_dir(out, OPTIONS.name)
    with (folder / f"{OPTIONS.name}-images.csv").open() as handle:
        source = {row["cid"]: row["source"] for row in csv.DictReader(handle)}
    mine = formats.load_sfm_db(out, OPTIONS.name)["train"]
    row = {cid: i for i, cid in enumerate(truth.cids)}
    return np.array([row[Path(source[cid]).stem] for cid in mine.cids])


@pytest.mark.slow
def test_positives_share_true_3d_points(run, capsys):
    world, truth, out, report = run
    geometry = json.loads(
        (formats.sfm_dir(world, "synthetic-sfm") / "synthetic-sfm-geometry.json").read_text()
    )
    pairs, seen = geometry["train"]["pairs"], np.array(geometry["train"]["points_seen"])
    columns = zip(pairs["query"], pairs["db"], pairs["shared"], strict=True)
    shared = {(q, d): s for q, d, s in columns}
    published = {  # the world's positives by the same rule: 20% of the query's points, scale 1.5
        (q, d)
        for q, d, s, scale in zip(
            pairs["query"], pairs["db"], pairs["shared"], pairs["scale"], strict=True
        )
        if truth.cluster[q] in FACADES and s / seen[q] >= 0.2 and scale <= 1.5
    }
    to_world = world_rows(out, truth)
    sidecar = formats.read_positives_sidecar(
        formats.sfm_dir(out, OPTIONS.name) / f"{OPTIONS.name}-positives.npz", len(to_world)
    )
    found = {
        (int(to_world[q]), int(to_world[p]))
        for q, cands in enumerate(sidecar.to_lists())
        for p, _ in cands
    }
    assert report["registered"] >= 10 and len(found) >= 10  # not vacuous
    precision = sum(shared.get(pair, 0) > 0 for pair in found) / len(found)
    recall = len(found & published) / len(published)
    with capsys.disabled():
        print(
            f"\nsynthetic facades: {report['registered']} of 30 images registered; positives "
            f"precision {precision:.2f} ({len(found)} pairs), recall {recall:.2f} of the "
            f"world's {len(published)}"
        )
    assert precision >= 0.9


@pytest.mark.slow
def test_models_do_not_mix_landmarks(run):
    _, truth, out, report = run
    mine = formats.load_sfm_db(out, OPTIONS.name)["train"]
    landmark = truth.cluster[world_rows(out, truth)]
    majority = sum(np.bincount(landmark[mine.cluster == m]).max() for m in np.unique(mine.cluster))
    assert len(np.unique(mine.cluster)) >= 2
    assert majority / len(landmark) >= 0.95
