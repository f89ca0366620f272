"""Pinned outputs of a fixed input: descriptors and one epoch's mined tuples.

Written before the package re-layout (issue 14) so that moves cannot change behaviour: the numbers
below were produced by main before the move and must stay the same after it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.data import formats
from retrieval.data.synthetic import SyntheticConfig, ensure_world
from retrieval.extraction.extract import extract_descriptors
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule, TupleSource
from retrieval.models.net import build_net

WORLD = SyntheticConfig(
    n_train_landmarks=8,
    n_val_landmarks=4,
    n_test_landmarks=2,
    views_per_landmark=6,
    queries_per_landmark=2,
    max_side=96,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return ensure_world(tmp_path_factory.mktemp("pinned") / "world", WORLD)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_net("efficientnet_lite0", "gem", weights="imagenet").eval()


def train_source(root) -> TupleSource:
    split = formats.load_sfm_db(root, "synthetic-sfm")["train"]
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
    paths = train_source(world).paths[:4]
    desc = extract_descriptors(net, paths, max_side=96, batch_size=2, precision="fp32")
    np.testing.assert_allclose(desc[:, PINNED_COLUMNS], PINNED_DESCRIPTORS, atol=2e-5)
    np.testing.assert_allclose(desc @ desc.T, PINNED_SIMILARITIES, atol=2e-5)


def test_one_epoch_of_tuples_is_pinned(world, net):
    config = MiningConfig(qsize=6, poolsize=24, nnum=2, image_size=96, precision="fp32")
    tuples = TupleDataModule(train_source(world), config).mine(net, epoch=0)
    got = [tuples.query.tolist(), tuples.positive.tolist(), tuples.negatives.tolist()]
    assert got == PINNED_TUPLES
