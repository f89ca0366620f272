"""Pinned outputs of a fixed input: descriptors and one epoch's mined tuples.

Written before the package re-layout (issue 14) so that moves cannot change behaviour: the numbers
below were produced by main before the move and must stay the same after it.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from retrieval.data import formats
from retrieval.data.augment import Augmentation
from retrieval.data.epoch_tuples import EpochTuples
from retrieval.data.tuples import sample_epoch
from retrieval.extraction.extract import extract_descriptors
from retrieval.lightning import tuple_datamodule
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule, TupleSource
from retrieval.models.net import build_net


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_net("efficientnet_lite0", "gem", weights="imagenet").eval()


def sfm_source(root, split: str = "train") -> TupleSource:
    """A split of the world's SfM database as the mining sees it (fixed positives)."""
    split = formats.load_sfm_db(root, "synthetic-sfm")[split]
    return TupleSource(
        list(split.image_paths),
        np.asarray(split.cluster),
        np.asarray(split.qidxs),
        np.asarray(split.pidxs),
    )


# Columns 93, 491, 246, 1117, 1111, 1268 (the largest on these images) of the first four
# training images' descriptors, and their 4 x 4 similarities.
PINNED_COLUMNS = [93, 491, 246, 1117, 1111, 1268]
PINNED_DESCRIPTORS = [
    [0.08635, 0.09372, 0.09098, 0.08092, 0.09122, 0.09415],
    [0.08351, 0.05859, 0.06933, 0.06318, 0.08616, 0.07267],
    [0.09275, 0.10396, 0.08422, 0.10432, 0.08078, 0.08761],
    [0.08667, 0.07986, 0.08667, 0.07823, 0.06836, 0.07153],
]
PINNED_SIMILARITIES = [
    [1.0, 0.54364, 0.67393, 0.68043],
    [0.54364, 1.0, 0.59571, 0.47279],
    [0.67393, 0.59571, 1.0, 0.627],
    [0.68043, 0.47279, 0.627, 1.0],
]
# Epoch 0 of qsize=6, poolsize=24, nnum=2: queries, positives, negatives.
PINNED_TUPLES = [
    [9, 0, 31, 8, 39, 20],
    [8, 3, 33, 9, 40, 23],
    [[32, 44], [40, 10], [24, 47], [22, 41], [47, 4], [17, 6]],
]


def test_descriptors_are_pinned(world, net):
    paths = sfm_source(world).paths[:4]
    desc = extract_descriptors(net, paths, max_side=96, batch_size=2, precision="fp32")
    np.testing.assert_allclose(desc[:, PINNED_COLUMNS], PINNED_DESCRIPTORS, atol=2e-5)
    np.testing.assert_allclose(desc @ desc.T, PINNED_SIMILARITIES, atol=2e-5)


def test_one_epoch_of_tuples_is_pinned(world, net):
    config = MiningConfig(qsize=6, poolsize=24, nnum=2, image_size=96, precision="fp32")
    tuples = TupleDataModule(sfm_source(world), config).mine(net, epoch=0)
    got = [tuples.query.tolist(), tuples.positive.tolist(), tuples.negatives.tolist()]
    assert got == PINNED_TUPLES


# --------------------------------------------------------------------------------------------------
# Per-epoch mining, checked against values computed independently of the module
# --------------------------------------------------------------------------------------------------

MINING = MiningConfig(qsize=6, poolsize=24, nnum=2, image_size=96, precision="fp32")


@pytest.fixture(scope="module")
def reference_descriptors(world, net):
    """Descriptors of every training image, extracted once on their own (not by the module)."""
    paths = sfm_source(world).paths
    desc = extract_descriptors(net, paths, max_side=96, batch_size=8, precision="fp32")
    return torch.from_numpy(desc)


@pytest.fixture(scope="module")
def epochs(world, net):
    """Epochs 0, 0 again and 1 mined by one module (nnum=3), with the (pairs, pool) it drew."""
    draws = []

    def spy(*args, **kwargs):
        draws.append(sample_epoch(*args, **kwargs))
        return draws[-1]

    module = TupleDataModule(sfm_source(world), dataclasses.replace(MINING, nnum=3))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuple_datamodule, "sample_epoch", spy)
        mined = [module.mine(net, epoch) for epoch in (0, 0, 1)]
    return list(zip(mined, draws, strict=True))


def full_sort_walk(sims, query_clusters, pool_clusters, nnum):
    """Reference rule: rank the whole pool (similarity desc, then position), keep the first image of
    each cluster other than the query's until nnum are kept."""
    out = []
    for row, own in zip(sims.tolist(), query_clusters.tolist(), strict=True):
        seen, kept = {own}, []
        for j in sorted(range(len(row)), key=lambda j: (-row[j], j)):
            if int(pool_clusters[j]) not in seen and len(kept) < nnum:
                seen.add(int(pool_clusters[j]))
                kept.append(j)
        out.append(kept)
    return out


def as_lists(tuples):
    return [tuples.query.tolist(), tuples.positive.tolist(), tuples.negatives.tolist()]


def test_each_epoch_draws_new_pairs_and_pool_and_repeats_exactly(world, epochs):
    (first, (pairs0, pool0)), (again, (pairs0b, pool0b)), (second, (pairs1, pool1)) = epochs
    assert as_lists(again) == as_lists(first)
    np.testing.assert_array_equal(again.neg_sims, first.neg_sims)
    assert torch.equal(pairs0, pairs0b) and torch.equal(pool0, pool0b)
    assert set(pool1.tolist()) != set(pool0.tolist()) and len(set(pool1.tolist())) == 24
    assert first.query.tolist() != second.query.tolist()
    assert (first.epoch, second.epoch) == (0, 1)
    # The queries and (fixed) positives are the database pairs that were drawn.
    source = sfm_source(world)
    for tuples, pairs in ((first, pairs0), (second, pairs1)):
        assert tuples.query.tolist() == source.qidxs[pairs.numpy()].tolist()
        assert tuples.positive.tolist() == source.pidxs[pairs.numpy()].tolist()


@pytest.mark.parametrize("epoch", [0, 1])
def test_negatives_are_the_full_sort_walk_one_per_other_model(
    world, epochs, reference_descriptors, epoch
):
    tuples, (_, pool) = epochs[2 * epoch]
    clusters = sfm_source(world).clusters
    neg_clusters = clusters[tuples.negatives]
    assert (neg_clusters != clusters[tuples.query][:, None]).all()  # never the query's model
    assert all(len(set(row)) == 3 for row in neg_clusters.tolist())  # at most one per model
    assert set(tuples.negatives.ravel().tolist()) <= set(pool.tolist())
    # The same negatives and similarities from the reference descriptors and a full sort.
    desc = reference_descriptors
    sims = desc[tuples.query] @ desc[pool].T
    walk = full_sort_walk(sims, clusters[tuples.query], clusters[pool.numpy()], 3)
    assert tuples.negatives.tolist() == pool.numpy()[walk].tolist()
    np.testing.assert_allclose(tuples.neg_sims, sims.gather(1, torch.tensor(walk)), atol=1e-5)
    pos_sims = (desc[tuples.query] * desc[tuples.positive]).sum(1)
    np.testing.assert_allclose(tuples.pos_sims, pos_sims, atol=1e-5)


class RecordingLogger:
    def __init__(self) -> None:
        self.calls: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.calls.append((dict(metrics), step))


def test_dataloaders_save_the_epoch_tuples_and_val_mines_the_db_pairs(world, net, tmp_path):
    sfm = formats.sfm_dir(world, "synthetic-sfm")
    train = sfm_source(world)
    train.candidates = formats.read_positives_sidecar(
        sfm / "synthetic-sfm-positives.npz", len(train.paths)
    ).to_lists()
    val = sfm_source(world, "val")
    config = dataclasses.replace(MINING, positives="random_topk_inliers", positive_topk=2)
    turn = Augmentation(rotate90=1.0)
    module = TupleDataModule(train, config, val, output_dir=tmp_path, augment=turn)
    logger = RecordingLogger()
    module.trainer = SimpleNamespace(
        lightning_module=SimpleNamespace(net=net),
        current_epoch=3,
        global_step=17,
        loggers=[logger],
        is_global_zero=True,
    )
    loader = module.train_dataloader()
    saved = EpochTuples.load(tmp_path / "tuples" / "train_epoch003.npz")
    assert saved.epoch == 3 and as_lists(saved) == as_lists(loader.dataset.tuples)
    assert len(loader.dataset) == 6 and loader.batch_size == config.batch_size
    images, target = next(iter(loader))[0]
    assert len(images) == 4 and target.tolist() == [-1, 1, 0, 0]
    assert loader.dataset.augment == turn  # training images are augmented...
    # Training positives: among each query's 2 candidates sharing the most 3D points.
    for q, p in zip(saved.query.tolist(), saved.positive.tolist(), strict=True):
        ranked = sorted((c for c in train.candidates[q] if c[0] != q), key=lambda c: -c[1])
        assert p in [c[0] for c in ranked[:2]]
    ((metrics, step),) = logger.calls
    assert step == 17 and metrics and all(k.startswith("train/mining_") for k in metrics)
    # Validation mines its own split with the database pairs, whatever data.positives says.
    assert module.val_dataloader().dataset.augment is None  # ... validation images never
    saved_val = EpochTuples.load(tmp_path / "tuples" / "val_epoch003.npz")
    db_pairs = set(zip(val.qidxs.tolist(), val.pidxs.tolist(), strict=True))
    val_pairs = zip(saved_val.query.tolist(), saved_val.positive.tolist(), strict=True)
    assert set(val_pairs) <= db_pairs
    assert int(saved_val.negatives.max()) < len(val.paths)
    assert all(k.startswith("val/mining_") for k in logger.calls[-1][0])


@pytest.mark.parametrize(
    ("change", "key"),
    [({"nnum": 0}, "data.nnum"), ({"poolsize": 1}, "data.poolsize"), ({"qsize": 0}, "data.qsize")],
)
def test_invalid_mining_values_fail_when_the_module_is_built(world, change, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TupleDataModule(sfm_source(world), dataclasses.replace(MINING, **change))


def test_mining_errors_and_warnings_name_the_split_too_small(world, caplog):
    """8 training landmarks, 4 validation ones: nnum=4 needs 5 models, which validation lacks."""
    val = sfm_source(world, "val")
    n_val = len(val.paths)
    with pytest.raises(ValueError, match=r"validation split has 4 clusters but data\.nnum=4"):
        TupleDataModule(sfm_source(world), dataclasses.replace(MINING, nnum=4), val)
    with caplog.at_level("WARNING", logger="retrieval.data.tuples"):
        TupleDataModule(sfm_source(world), dataclasses.replace(MINING, poolsize=n_val + 1), val)
    assert f"exceeds the {n_val} validation images" in caplog.text
    assert "training images" not in caplog.text
