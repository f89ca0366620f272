"""Activation maps, MAC matching regions and distance histograms, checked on planted inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.models.pooling import MAC, RMAC, CroW, GeM, SPoC
from retrieval.viz import maps as viz_maps
from retrieval.viz.grids import BACKGROUND, NEGATIVE_COLOUR, POSITIVE_COLOUR

GREY = (128, 128, 128)


def planted_map(channels: int = 8, size: int = 8, rows=(2, 4), cols=(5, 7)) -> torch.Tensor:
    """Weak noise with a strong block at rows x cols (half-open ranges)."""
    x = torch.rand(channels, size, size, generator=torch.Generator().manual_seed(0)) * 0.2
    x[:, rows[0] : rows[1], cols[0] : cols[1]] += 1.0
    return x


def redness(img: Image.Image) -> np.ndarray:
    rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
    return rgb[..., 0] - rgb[..., 1:].max(axis=-1)


POOLINGS = {
    "gem": GeM(p=3.0),
    "gem_channel": GeM(p=3.0, per_channel=8),
    "mac": MAC(),
    "spoc": SPoC(),
    "rmac": RMAC(),
    "crow": CroW(),
}


@pytest.mark.parametrize("name", sorted(POOLINGS))
def test_activation_peak_lies_on_the_planted_region(name):
    heat = viz_maps.activation_map(planted_map(), POOLINGS[name])
    assert heat.shape == (8, 8) and heat.min() == 0 and heat.max() == pytest.approx(1.0)
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert 2 <= row < 4 and 5 <= col < 7
    if name in ("mac", "rmac"):  # only the channels' argmax positions vote
        assert (heat > 0).sum() <= 8


def test_mac_votes_weigh_each_channel_by_its_maximum():
    x = torch.zeros(3, 4, 4)
    x[0, 0, 0] = 1.0
    x[1, 0, 0] = 1.0
    x[2, 3, 3] = 5.0  # one strong channel beats two weak ones
    heat = viz_maps.activation_map(x, MAC())
    assert heat[3, 3] == 1.0 and heat[0, 0] == pytest.approx(2 / 5)


def test_overlay_is_reddest_on_the_planted_region_and_leaves_cold_pixels_alone():
    heat = viz_maps.activation_map(planted_map(), GeM(p=3.0))
    image = Image.new("RGB", (64, 64), GREY)
    out = viz_maps.overlay_heatmap(image, heat)
    assert out.size == (64, 64)
    red = redness(out)
    y, x = np.unravel_index(red.argmax(), red.shape)
    # Map cells are 8 px: rows 2-3 -> y 16..31, columns 5-6 -> x 40..55.
    assert 16 <= y < 32 and 40 <= x < 56
    r, g, b = out.getpixel((44, 20))
    assert r > 180 and g < 100 and b < 100  # red over the block
    cold = np.zeros((8, 8), np.float32)
    assert viz_maps.overlay_heatmap(image, cold).getpixel((5, 5)) == GREY
    with pytest.raises(ValueError, match="h x w"):
        viz_maps.overlay_heatmap(image, np.zeros(4))


def test_mac_matches_group_channels_by_position_pair_and_sum_to_the_cosine():
    q, d = torch.rand(6, 4, 4) * 0.1, torch.rand(6, 5, 5) * 0.1
    q[0:2, 1, 2] = 3.0  # channels 0 and 1: query (1, 2) <-> database (3, 0)
    d[0:2, 3, 0] = 3.0
    q[2, 0, 0], d[2, 4, 4] = 2.0, 2.0  # channel 2: (0, 0) <-> (4, 4)
    matches = viz_maps.mac_matches(q, d, top=100)
    first, second = matches[:2]
    assert (first.query_cell, first.db_cell, first.channels) == ((1, 2), (3, 0), 2)
    assert (second.query_cell, second.db_cell, second.channels) == ((0, 0), (4, 4), 1)
    contributions = [m.contribution for m in matches]
    assert contributions == sorted(contributions, reverse=True)
    cosine = torch.nn.functional.cosine_similarity(q.amax((1, 2)), d.amax((1, 2)), dim=0)
    assert sum(contributions) == pytest.approx(float(cosine), rel=1e-6)
    assert sum(m.channels for m in matches) == 6
    assert len(viz_maps.mac_matches(q, d, top=1)) == 1
    with pytest.raises(ValueError, match="channel"):
        viz_maps.mac_matches(q, d[:3])


def test_matches_are_boxed_at_their_cells_one_colour_each():
    query, db = Image.new("RGB", (80, 80), GREY), Image.new("RGB", (100, 60), GREY)
    matches = [
        viz_maps.RegionMatch((1, 2), (0, 4), 0.5, 2),
        viz_maps.RegionMatch((3, 0), (2, 1), 0.2, 1),
    ]
    out = viz_maps.draw_matches(query, db, (4, 4), (3, 5), matches, width=2)
    assert out.size == (80 + viz_maps.GAP + 100, 80)
    colours = viz_maps.palette(2)
    assert colours[0] != colours[1]
    offset = 80 + viz_maps.GAP
    for match, colour in zip(matches, colours, strict=True):
        for cell, size, map_size, dx in (
            (match.query_cell, (80, 80), (4, 4), 0),
            (match.db_cell, (100, 60), (3, 5), offset),
        ):
            x1, y1, x2, y2 = viz_maps.cell_box(cell, map_size, size)
            cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
            # The box surrounds the cell: its edges carry the colour, its centre the image.
            assert out.getpixel((dx + x1, cy)) == colour
            assert out.getpixel((dx + x2, cy)) == colour
            assert out.getpixel((dx + cx, y1)) == colour
            assert out.getpixel((dx + cx, cy)) == GREY
            ch, cw = size[1] / map_size[0], size[0] / map_size[1]
            assert x1 <= (cell[1] + 0.5) * cw <= x2 and y1 <= (cell[0] + 0.5) * ch <= y2


def test_cell_box_stays_inside_the_image():
    assert viz_maps.cell_box((0, 0), (4, 4), (80, 80)) == (0, 0, 24, 24)
    assert viz_maps.cell_box((3, 3), (4, 4), (80, 80)) == (55, 55, 79, 79)


def test_distances_from_similarities():
    d = viz_maps.similarity_to_distance(np.array([1.0, 0.0, -1.0, 1.0000001]))
    np.testing.assert_allclose(d, [0.0, np.sqrt(2), 2.0, 0.0], atol=1e-6)


def test_distance_histograms_draw_each_set_in_its_bin_and_colour():
    rows = [
        ("epoch 0", np.full(10, 0.25), np.full(30, 1.35)),
        ("epoch 1", np.full(10, 0.25), np.array([1.35, 1.85])),
    ]
    img = viz_maps.distance_histograms(rows, bins=20, value_range=(0.0, 2.0))
    expected_h = viz_maps.HIST_TOP + 2 * viz_maps.HIST_ROW + viz_maps.HIST_BOTTOM
    assert img.size == (viz_maps.HIST_LEFT + viz_maps.HIST_WIDTH + viz_maps.GAP, expected_h)
    rgb = np.asarray(img)
    bin_w = viz_maps.HIST_WIDTH / 20

    def columns(colour, r):
        top = viz_maps.HIST_TOP + r * viz_maps.HIST_ROW
        band = rgb[top : top + viz_maps.HIST_ROW]
        xs = np.flatnonzero((band == colour).all(axis=-1).any(axis=0))
        return (xs - viz_maps.HIST_LEFT) / bin_w  # in bins

    green, red = columns(POSITIVE_COLOUR, 0), columns(NEGATIVE_COLOUR, 0)
    assert green.min() >= 2 and green.max() < 2.5  # 0.25: bin 2, left half
    assert red.min() >= 13.5 and red.max() < 14  # 1.35: bin 13, right half
    red1 = columns(NEGATIVE_COLOUR, 1)
    assert set(np.floor(red1).astype(int)) == {13, 18}  # both negatives of epoch 1

    def height(colour, r, value, half):
        top = viz_maps.HIST_TOP + r * viz_maps.HIST_ROW
        x = viz_maps.HIST_LEFT + int((np.floor(value * 10) + 0.25 + 0.5 * half) * bin_w)
        return int((rgb[top : top + viz_maps.HIST_ROW, x] == colour).all(-1).sum())

    # Heights are shares of each set: 10 positives in one bin are as tall as 30 negatives in one.
    assert height(POSITIVE_COLOUR, 0, 0.25, 0) == height(NEGATIVE_COLOUR, 0, 1.35, 1) > 40
    full, half_share = height(POSITIVE_COLOUR, 1, 0.25, 0), height(NEGATIVE_COLOUR, 1, 1.35, 1)
    assert abs(half_share - full / 2) <= 1
    assert tuple(rgb[2, -1]) == BACKGROUND
    with pytest.raises(ValueError):
        viz_maps.distance_histograms([])


def test_stacking_and_tiles():
    a, b = Image.new("RGB", (10, 20), (1, 2, 3)), Image.new("RGB", (30, 5), (4, 5, 6))
    assert viz_maps.hstack([a, b]).size == (10 + viz_maps.GAP + 30, 20)
    assert viz_maps.vstack([a, b]).size == (30, 20 + viz_maps.GAP + 5)
    t = viz_maps.tile(b, 16)
    assert t.size == (16, 16) and t.getpixel((8, 8)) == (4, 5, 6)
