"""Training-image augmentation: what each draw does, that it repeats, that only training sees it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.data.augment import Augmentation, image_generator, random_crop
from retrieval.data.epoch_tuples import EpochTuples
from retrieval.data.transforms import prepare_image
from retrieval.data.tuple_dataset import TupleDataset

PLAIN = {"mean": [0, 0, 0], "std": [1, 1, 1]}


def gradient(width: int = 48, height: int = 32) -> Image.Image:
    """Every pixel different: (x, y, x + y) scaled, so a crop or a turn shows where it came from."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.fixture
def photos(tmp_path):
    paths = []
    for k in range(4):
        path = tmp_path / f"{k}.png"
        gradient().rotate(0 if k < 2 else 180).save(path)
        paths.append(path)
    return paths


TUPLES = EpochTuples(query=[0, 2], positive=[1, 3], negatives=[[2], [0]], epoch=3)


def test_the_defaults_change_nothing(photos):
    assert not Augmentation().active
    plain = TupleDataset(photos, TUPLES, 32, **PLAIN)
    same = TupleDataset(photos, TUPLES, 32, **PLAIN, augment=Augmentation())
    for a, b in zip(plain[0][0], same[0][0], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain[0][0][0], prepare_image(photos[0], 32, **PLAIN))


def test_a_quarter_turn_is_the_turned_image():
    img, rng = gradient(), image_generator(0, 0, 0, 0)
    turned = Augmentation(rotate90=1.0).geometry(img, img.size, rng)
    assert turned.size == (32, 48)
    left = np.asarray(img.transpose(Image.Transpose.ROTATE_90))
    right = np.asarray(img.transpose(Image.Transpose.ROTATE_270))
    out = np.asarray(turned)
    assert np.array_equal(out, left) or np.array_equal(out, right)
    turns = [
        np.array_equal(
            np.asarray(
                Augmentation(rotate90=1.0).geometry(img, img.size, image_generator(0, 0, i, 0))
            ),
            left,
        )
        for i in range(40)
    ]
    assert 5 < sum(turns) < 35  # both directions are drawn


def test_a_crop_is_a_window_of_the_image_with_at_least_the_area_asked():
    img = gradient(64, 48)
    pixels = np.asarray(img)
    for item in range(30):
        crop = random_crop(img, 0.5, image_generator(1, 0, item, 0))
        w, h = crop.size
        assert w * h >= 0.5 * 64 * 48 * 0.9  # rounding of each side
        assert w <= 64 and h <= 48
        window = np.asarray(crop)
        left, top = int(window[0, 0, 0]) * 64 // 255, int(window[0, 0, 1]) * 48 // 255
        found = [
            (x, y)
            for x in range(max(0, left - 1), min(64 - w, left + 1) + 1)
            for y in range(max(0, top - 1), min(48 - h, top + 1) + 1)
            if np.array_equal(pixels[y : y + h, x : x + w], window)
        ]
        assert found, f"crop {item} ({w}x{h}) is not a window of the image"


def test_a_cropped_image_keeps_the_plain_images_shape():
    """Kernels are built per input shape: a new shape for every crop would rebuild them."""
    img = gradient(64, 48)
    shapes = {
        Augmentation(crop=0.3).geometry(img, (32, 24), image_generator(2, 0, i, 0)).size
        for i in range(10)
    }
    assert shapes == {(32, 24)}
    turned = Augmentation(crop=0.3, rotate90=1.0).geometry(
        img, (32, 24), image_generator(2, 0, 0, 0)
    )
    assert turned.size == (24, 32)


def test_colour_jitter_changes_colours_not_geometry():
    img = gradient()
    out = Augmentation(color=0.4).colour(img, image_generator(0, 0, 0, 0))
    assert out.size == img.size
    assert not np.array_equal(np.asarray(out), np.asarray(img))
    assert np.array_equal(
        np.asarray(Augmentation().colour(img, image_generator(0, 0, 0, 0))), np.asarray(img)
    )


def test_draws_repeat_for_the_same_image_and_epoch_and_differ_across_epochs(photos):
    augment = Augmentation(crop=0.4, rotate90=0.5, color=0.3)
    first = TupleDataset(photos, TUPLES, 32, **PLAIN, augment=augment, seed=7)
    again = TupleDataset(photos, TUPLES, 32, **PLAIN, augment=augment, seed=7)
    for a, b in zip(first[1][0], again[1][0], strict=True):
        assert torch.equal(a, b)
    later = EpochTuples(query=[0, 2], positive=[1, 3], negatives=[[2], [0]], epoch=4)
    other = TupleDataset(photos, later, 32, **PLAIN, augment=augment, seed=7)
    differ = [
        a.shape != b.shape or not torch.equal(a, b)
        for a, b in zip(first[1][0], other[1][0], strict=True)
    ]
    assert any(differ)
    assert max(max(x.shape[1:]) for x in first[1][0]) <= 32  # still shrunk to max_side


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crop": 0.0}, "crop=0.0"),
        ({"crop": 1.5}, "crop=1.5"),
        ({"rotate90": -0.1}, "rotate90=-0.1"),
        ({"color": 1.0}, "color=1.0"),
    ],
)
def test_out_of_range_settings_are_refused_with_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**options)
