"""TupleDataset: the images of each tuple, and the collate that keeps their sizes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from retrieval.data.epoch_tuples import EpochTuples
from retrieval.data.tuple_dataset import TupleDataset, collate_tuples


def test_tuple_dataset_loads_the_tuple_images(tmp_path):
    sizes = [(20, 10), (10, 20), (6, 6), (16, 8), (8, 8)]  # (width, height)
    paths = []
    for k, size in enumerate(sizes):
        path = tmp_path / f"im{k}.png"
        Image.new("RGB", size, (40 * k, 0, 0)).save(path)
        paths.append(path)
    tuples = EpochTuples(query=[0, 3], positive=[1, 4], negatives=[[2, 3], [0, 1]])
    ds = TupleDataset(paths, tuples, max_side=8, mean=[0, 0, 0], std=[1, 1, 1])
    assert len(ds) == 2
    images, target = ds[0]
    assert [tuple(x.shape) for x in images] == [(3, 4, 8), (3, 8, 4), (3, 6, 6), (3, 4, 8)]
    assert [round(float(x[0].mean()) * 255) for x in images] == [0, 40, 80, 120]
    assert target.tolist() == [-1, 1, 0, 0]

    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_tuples)
    batch = next(iter(loader))
    assert len(batch) == 2 and batch[1][1].tolist() == [-1, 1, 0, 0]
    assert [round(float(x[0].mean()) * 255) for x in batch[1][0]] == [120, 160, 0, 40]


def test_tuple_dataset_errors(tmp_path):
    ds = TupleDataset([tmp_path / "a.png"], None, max_side=8, mean=[0] * 3, std=[1] * 3)
    assert len(ds) == 0
    with pytest.raises(RuntimeError, match="set_tuples"):
        ds[0]
    with pytest.raises(ValueError, match="refer to image 3 but only 1 image paths"):
        ds.set_tuples(EpochTuples([0], [3], [[0]]))
