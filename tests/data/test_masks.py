"""Mask and polygon geometry: mask boxes, polygon rasterisation and outline tracing by hand."""

import numpy as np
import pytest

from retrieval.data.masks import mask_box, mask_to_polygons, polygons_to_mask


def test_mask_box_by_hand():
    a = np.zeros((4, 5), bool)
    a[1:3, 1:4] = True
    assert mask_box(a) == (1.0, 1.0, 4.0, 3.0)  # pixel edges
    assert mask_box(np.zeros_like(a)) is None
    assert all(type(v) is float for v in mask_box(a))


def test_mask_box_is_the_extent_of_the_nonzero_pixels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((7, 9)) < 0.1
        ys, xs = np.nonzero(mask)
        if xs.size:
            expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert mask_box(mask) == tuple(float(v) for v in expected)
        assert mask_box(mask.astype(np.uint8) * 255) == mask_box(mask)


def test_polygon_rasterisation_by_hand():
    square = np.array([[1, 1], [3, 1], [3, 3], [1, 3]])  # (x, y) pixel centres, outline included
    mask = polygons_to_mask([square], (5, 6))
    expected = np.zeros((5, 6), bool)
    expected[1:4, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    two = polygons_to_mask([square, np.array([[5, 0], [5, 0], [5, 0]])], (5, 6))
    assert two[0, 5] and two.sum() == 10  # shapes are united


@pytest.mark.parametrize(
    "rows",
    [
        ["0110", "0110", "0000"],
        ["1000", "0110", "0011"],  # diagonal steps stay one 8-connected component
        ["11100", "10100", "11100"],  # a hole: filled, as labelme outlines are
        ["10001", "00000", "10001"],  # four isolated pixels
        ["11111", "00100", "00100"],  # one-pixel-wide spurs
    ],
)
def test_mask_to_polygons_round_trip(rows):
    mask = np.array([[c == "1" for c in r] for r in rows])
    polygons = mask_to_polygons(mask)
    back = polygons_to_mask(polygons, mask.shape)
    filled = mask.copy()
    if rows[1] == "10100":
        filled[1, 1] = True
    np.testing.assert_array_equal(back, filled)
    assert all(p.ndim == 2 and p.shape[1] == 2 for p in polygons)


def test_mask_to_polygons_random_blobs_and_min_area():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((9, 11)) < 0.3
        back = polygons_to_mask(mask_to_polygons(mask), mask.shape)
        assert (back | ~mask).all()  # every pixel is covered
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = True
    mask[2:5, 2:5] = True
    assert len(mask_to_polygons(mask)) == 2
    assert len(mask_to_polygons(mask, min_area=4)) == 1
    # collinear boundary points are dropped: a filled rectangle is its four corners
    rect = np.zeros((8, 9), bool)
    rect[2:6, 1:8] = True
    (outline,) = mask_to_polygons(rect)
    assert sorted(map(tuple, outline)) == [(1, 2), (1, 5), (7, 2), (7, 5)]
