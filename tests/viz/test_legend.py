"""Legends: keys wrap within the picture, swatches in their colours, every picture explained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retrieval.viz import grids, maps
from retrieval.viz.legend import (
    LEGEND_PAPER,
    LINE,
    PAD,
    SWATCH,
    Key,
    legend_font,
    legend_lines,
    legend_size,
    with_legend,
)

RED, BLUE, GREY = (220, 20, 20), (20, 20, 220), (90, 90, 90)


@pytest.fixture
def written(monkeypatch) -> list[tuple[tuple[float, float], str]]:
    """Every (xy, text) drawn with ImageDraw.text while the test runs."""
    calls: list[tuple[tuple[float, float], str]] = []
    original = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        calls.append((tuple(xy), str(text)))
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    return calls


def test_keys_wrap_into_lines_within_the_width():
    keys = [Key("first meaning", (RED,)), Key("second", (BLUE,)), Key("third one", (GREY,))]
    font = legend_font()
    wide = sum(k.width(font) for k in keys) + 4 * PAD + 2 * 12
    assert legend_lines(keys, wide) == [keys]
    assert legend_size(keys, wide) == (wide, LINE)
    narrow = max(k.width(font) for k in keys) + 2 * PAD
    assert legend_lines(keys, narrow) == [[k] for k in keys]  # in order, one per line
    assert legend_size(keys, narrow) == (narrow, 3 * LINE)
    # A key wider than the picture gets its own line and widens the legend rather than clipping.
    long = Key("x" * 80, (RED,))
    assert legend_size([long], 50)[0] == PAD + long.width(font) + PAD
    assert legend_size([], 50) == (50, 0)


def test_swatches_are_drawn_in_their_colours_below_the_picture(written):
    picture = Image.new("RGB", (400, 30), GREY)
    keys = [
        Key("filled", (RED,)),
        Key("boxes", (BLUE, RED), outline=True),
        Key("scale", (maps.HEAT_LOW, maps.HEAT_MID, maps.HEAT_HIGH)),
    ]
    out = with_legend(picture, keys)
    assert out.size == (400, 30 + LINE)
    pixels = np.asarray(out)
    assert (pixels[:30] == GREY).all()  # the picture itself is untouched
    font, y = legend_font(), 30 + 3
    x_boxes = PAD + keys[0].width(font) + 12
    x_scale = x_boxes + keys[1].width(font) + 12
    assert out.getpixel((PAD + SWATCH // 2, y + SWATCH // 2)) == RED
    assert out.getpixel((x_boxes, y + SWATCH // 2)) == BLUE  # hollow: edge coloured ...
    assert out.getpixel((x_boxes + SWATCH // 2, y + SWATCH // 2)) == LEGEND_PAPER  # ... inside not
    assert out.getpixel((x_boxes + SWATCH + 2, y + SWATCH // 2)) == RED  # the second box
    assert out.getpixel((x_scale, y + SWATCH // 2)) == maps.HEAT_LOW
    assert out.getpixel((x_scale + 3 * SWATCH - 1, y + SWATCH // 2)) == maps.HEAT_HIGH
    assert [text for _, text in written] == ["filled", "boxes", "scale"]
    text_x = [xy[0] for xy, _ in written]  # each text right of its swatch
    assert text_x == [2 * PAD + SWATCH, x_boxes + 2 * SWATCH + 2 + PAD, x_scale + 3 * SWATCH + PAD]


def test_activation_picture_titles_its_columns_and_explains_the_heat(written):
    thumb = 64
    tiles = Image.new("RGB", (4 * thumb + 3 * maps.GAP, 2 * thumb + maps.GAP), GREY)
    out = maps.activation_legend(tiles, thumb)
    step = thumb + maps.GAP
    assert written[:4] == [
        ((1, 2), "query (crop)"),
        ((step + 1, 2), "result 1"),
        ((2 * step + 1, 2), "result 2"),
        ((3 * step + 1, 2), "result 3"),
    ]
    assert written[4][1] == maps.HEAT_KEY.text and "low to high" in maps.HEAT_KEY.text
    assert np.array_equal(np.asarray(out)[LINE : LINE + tiles.height, : tiles.width], tiles)


def test_matches_picture_says_which_side_is_the_query(written):
    out = maps.matches_legend(Image.new("RGB", (2 * 128 + maps.GAP, 128), GREY), matches=3)
    texts = [text for _, text in written]
    assert texts[0] == "left: the query (its crop); right: its top-1 result"
    assert "one colour per region pair" in texts[1]
    assert out.size[1] == 128 + 2 * LINE


def test_grid_legend_names_the_query_box_and_the_mask_only_when_drawn(tmp_path: Path, written):
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 48), GREY).save(image)
    plain = grids.retrieval_grid([image], [None], [[image]], [["positive"]], tmp_path / "p.png")
    texts = [text for _, text in written]
    assert texts[-4:] == ["query", "positive", "junk", "negative"]
    written.clear()
    mask = np.ones((48, 64), bool)
    full = grids.retrieval_grid(
        [image], [(0, 0, 32, 24)], [[image]], [["junk"]], tmp_path / "f.png", masks=[[mask]]
    )
    texts = [text for _, text in written]
    assert texts[-6:] == [
        "query",
        "query box (the region searched)",
        "positive",
        "junk",
        "negative",
        "tint: the object's predicted mask",
    ]
    plain_pixels, full_pixels = (np.asarray(Image.open(p).convert("RGB")) for p in (plain, full))
    legend_top = grids.grid_size(1, 10, 128, [])[1]
    assert not (plain_pixels[legend_top:] == grids.MASK_COLOUR).all(-1).any()
    assert (full_pixels[legend_top:] == grids.MASK_COLOUR).all(-1).any()  # the mask's swatch
    assert (full_pixels[legend_top:] == grids.QUERY_BOX_COLOUR).all(-1).any()  # the box's
