"""Models to a retrieval-SfM-120k training set, read back by the project's own readers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.data import formats
from retrieval.data.sfm.dataset import Model, split_models, write_dataset
from retrieval.data.sfm.models import PairStatistics
from retrieval.data.sfm.options import SfmOptions


def model(model_id: int, n: int, pairs: list[tuple[int, int, int, float]], points: list[int]):
    """A model of n images; pairs (a, b, shared, scale); points seen per image."""
    a, b, shared, scale = (np.array(c) for c in zip(*pairs, strict=True))
    stats = PairStatistics(a, b, shared, scale.astype(float), np.array(points))
    return Model(model_id, [f"{model_id:02d}{i:030d}" for i in range(n)], stats, 100)


@pytest.fixture
def three_models(tmp_path):
    models = [
        # 0-1 share 40 of 100 points: positives both ways; 0-2 share 40 but 2x the scale.
        model(0, 3, [(0, 1, 40, 1.1), (0, 2, 40, 2.0)], [100, 100, 100]),
        model(1, 2, [(0, 1, 30, 1.0)], [50, 300]),  # 0->1 (0.6) yes, 1->0 (0.1) no
        model(2, 2, [(0, 1, 90, 1.2)], [100, 100]),
    ]
    images = tmp_path / "prepared"
    images.mkdir()
    for m in models:
        for cid in m.cids:
            Image.new("RGB", (32, 24), (cid.count("1") * 40, 90, 20)).save(images / f"{cid}.jpg")
    sources = {cid: f"photos/{cid[:4]}.jpg" for m in models for cid in m.cids}
    return models, images, sources


def test_split_keeps_two_training_models_and_holds_one_out_from_three():
    assert split_models(2, 0.5, 0).tolist() == [False, False]
    assert split_models(3, 0.1, 0).sum() == 1
    assert split_models(100, 0.1, 0).sum() == 10
    assert split_models(5, 0.0, 0).sum() == 0
    np.testing.assert_array_equal(split_models(10, 0.3, 1), split_models(10, 0.3, 1))


def test_written_set_passes_the_reader_and_follows_the_positive_rule(tmp_path, three_models):
    models, images, sources = three_models
    options = SfmOptions(name="mine", val_fraction=0.0, min_shared=10)
    stats = write_dataset(tmp_path, models, images, sources, options)
    splits = formats.load_sfm_db(tmp_path, "mine")  # validates, images included
    assert set(splits) == {"train"}
    train = splits["train"]
    assert stats["train"] == {"images": 7, "models": 3, "pairs": 5, "whitening_pairs": 3}
    assert train.cluster.tolist() == [0, 0, 0, 1, 1, 2, 2]
    pairs = set(zip(train.qidxs.tolist(), train.pidxs.tolist(), strict=True))
    # 0<->1 in model 0; 3->4 in model 1 (not 4->3: 30 of 300 points); 5<->6 in model 2
    assert pairs == {(0, 1), (1, 0), (3, 4), (5, 6), (6, 5)}
    sidecar = formats.read_positives_sidecar(
        formats.sfm_dir(tmp_path, "mine") / "mine-positives.npz", len(train)
    )
    assert sidecar[0] == [(1, 40)] and sidecar[2] == [] and sidecar[5] == [(6, 90)]
    whiten = formats.read_whiten_pairs(formats.sfm_whiten_path(tmp_path, "mine"))
    assert set(zip(whiten.qidxs.tolist(), whiten.pidxs.tolist(), strict=True)) == {
        (0, 1),
        (3, 4),
        (5, 6),
    }
    table = (formats.sfm_dir(tmp_path, "mine") / "mine-images.csv").read_text().splitlines()
    assert table[0] == "cid,source,split,model" and len(table) == 8


def test_validation_models_are_whole_models(tmp_path, three_models):
    models, images, sources = three_models
    options = SfmOptions(name="mine", val_fraction=0.34, min_shared=10)
    write_dataset(tmp_path, models, images, sources, options)
    splits = formats.load_sfm_db(tmp_path, "mine")
    train, val = splits["train"], splits["val"]
    assert len(set(val.cluster.tolist())) == 1
    assert not set(val.cluster.tolist()) & set(train.cluster.tolist())
    assert not set(val.cids) & set(train.cids)
    assert len(train) + len(val) == 7


def test_interrupted_rewrite_leaves_no_database_over_newer_sidecars(
    tmp_path, three_models, monkeypatch
):
    models, images, sources = three_models
    write_dataset(tmp_path, models, images, sources, SfmOptions(name="mine", val_fraction=0.0))
    assert formats.sfm_db_path(tmp_path, "mine").is_file()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(formats, "write_whiten_pairs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, models, images, sources, SfmOptions(name="mine", min_shared=50))
    assert not formats.sfm_db_path(tmp_path, "mine").exists()
