"""``python -m retrieval.data sfm`` on real photos (../shared/data/sfm_scenes: 34 photos of 6
landmarks), run once per session: pairs proposed by the project's network, COLMAP models, a
database the readers accept, tuples the datamodule mines; then a resumed run and bad input."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.data import formats
from retrieval.data.__main__ import main as data_main
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule
from retrieval.models.net import build_net
from retrieval.pipelines.sources import build_sources

SCENES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sfm_scenes"
NAME = "scenes"
# Small images and capped SIFT keep COLMAP to about 40 s on 2 cores; pairs by retrieval (k=6).
ARGS = ["--name", NAME, "--max-side", "512", "--max-features", "1024", "--pairs-k", "6"]
ARGS += ["--exhaustive-max", "0", "--image-size", "256", "--threads", "2", "--device", "cpu"]


def run_sfm(images: Path, out: Path, *extra: str) -> int:
    return data_main(["sfm", "--images", str(images), "--out", str(out), *ARGS, *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One run on the real photos, shared by the tests below; its printed summary too."""
    if not SCENES.is_dir():
        pytest.skip(f"real data folder {SCENES} is absent")
    pytest.importorskip("pycolmap", reason="pip install -e '.[sfm]' for COLMAP's bindings")
    out = tmp_path_factory.mktemp("sfm_scenes")
    assert run_sfm(SCENES, out) == 0
    with (formats.sfm_dir(out, NAME) / f"{NAME}-images.csv").open() as handle:
        images = list(csv.DictReader(handle))
    with (SCENES / "groundtruth.csv").open() as handle:
        landmark = {row["path"]: row["landmark"] for row in csv.DictReader(handle)}
    return out, images, landmark


@pytest.mark.slow
def test_no_model_mixes_two_landmarks(built):
    _, images, landmark = built
    per_model: dict[str, set[str]] = {}
    for row in images:
        per_model.setdefault(row["model"], set()).add(landmark[row["source"]])
    assert len(per_model) >= 2
    assert all(len(landmarks) == 1 for landmarks in per_model.values()), per_model


@pytest.mark.slow
def test_most_of_sceaux_castle_is_one_model(built):
    _, images, landmark = built
    models = Counter(r["model"] for r in images if landmark[r["source"]] == "sceaux_castle")
    assert models.most_common(1)[0][1] >= 9


@pytest.mark.slow
def test_written_database_passes_the_readers(built):
    out, images, _ = built
    splits = formats.load_sfm_db(out, NAME)  # validates every field and every image file
    assert sum(len(s) for s in splits.values()) == len(images)
    train = splits["train"]
    assert train.qidxs.size > 0
    assert np.all(train.cluster[train.qidxs] == train.cluster[train.pidxs])
    sidecar = formats.read_positives_sidecar(
        formats.sfm_dir(out, NAME) / f"{NAME}-positives.npz", len(train)
    )
    for q, p in zip(train.qidxs, train.pidxs, strict=True):
        assert int(p) in [j for j, _ in sidecar[int(q)]]  # the fixed positive is a candidate
    whiten = formats.read_whiten_pairs(formats.sfm_whiten_path(out, NAME))
    assert len(whiten.qidxs) > 0


@pytest.mark.slow
@pytest.mark.parametrize("positives", ["hardest", "random_topk_inliers"])
def test_mined_negatives_come_from_other_models(built, train_config, positives):
    out, _, _ = built
    cfg = train_config("data=sfm_photos", f"data.root={out}", f"data.name={NAME}")
    cfg.data.positives = positives
    train, _, benchmark = build_sources(cfg)
    assert benchmark.images  # leave-one-out over the held-out models' images
    nnum = len(np.unique(train.clusters)) - 1
    config = MiningConfig(qsize=20, poolsize=100, nnum=nnum, positives=positives, image_size=64)
    torch.manual_seed(0)
    net = build_net("resnet18", "gem", weights="none")
    tuples = TupleDataModule(train, config).mine(net, epoch=0)
    clusters = np.asarray(train.clusters)
    query, negatives = clusters[tuples.query], clusters[tuples.negatives]
    assert np.all(negatives != query[:, None])
    assert np.all(clusters[tuples.positive] == query)


@pytest.mark.slow
def test_second_run_resumes_every_stage(built, capsys):
    out, _, _ = built
    db = formats.sfm_db_path(out, NAME)
    before = db.stat().st_mtime_ns
    assert run_sfm(SCENES, out) == 0
    printed = capsys.readouterr().out
    assert (
        "resumed: images, descriptors, pairs, features, matches, verification, mapping, "
        "dataset" in printed
    )
    assert db.stat().st_mtime_ns == before  # nothing rewritten
    assert f"python train.py data=sfm_photos data.root={out} data.name={NAME}" in printed


def test_empty_folder_is_refused_and_nothing_written(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert run_sfm(tmp_path / "photos", tmp_path / "out") == 2
    assert "no images in" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_single_photo_is_refused_and_nothing_written(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(tmp_path / "photos" / "one.jpg")
    assert run_sfm(tmp_path / "photos", tmp_path / "out") == 2
    assert "a single readable image (one.jpg)" in capsys.readouterr().err
    assert not formats.sfm_dir(tmp_path / "out", NAME).exists()


def test_without_pycolmap_the_command_names_the_pip_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)
    assert run_sfm(tmp_path, tmp_path / "out") == 2
    assert 'pip install -e ".[sfm]"' in capsys.readouterr().err


def test_a_checkpoint_describes_the_photos(tmp_path):
    from retrieval.checkpoint import save_checkpoint
    from retrieval.extraction.extract import extract_descriptors
    from retrieval.pipelines.sfm import network_describer

    torch.manual_seed(0)
    net = build_net("resnet18", "gem", weights="none")
    path = save_checkpoint(tmp_path / "model.pt", net)
    photos = []
    for k in range(2):
        photos.append(tmp_path / f"p{k}.jpg")
        Image.new("RGB", (80, 60), (40 * k, 200, 90)).save(photos[-1])
    describe, name = network_describer(str(path), image_size=64, device="cpu")
    assert name.startswith(f"checkpoint:{path.resolve()}:")
    got = describe(photos)
    expected = extract_descriptors(net, photos, max_side=64, progress=False)
    assert got.shape == expected.shape == (2, net.meta["out_dim"])
    assert np.all((got * expected).sum(1) > 0.999)  # the checkpoint's network, not another


def test_missing_checkpoint_is_named(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert run_sfm(tmp_path / "photos", tmp_path / "out", "--checkpoint", "nope.pt") == 2
    assert "--checkpoint nope.pt not found" in capsys.readouterr().err
