"""Retrieval grids: frame colours, query boxes, layout and ground-truth labels, read from pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.data import formats
from retrieval.data.formats import RetrievalBenchmark
from retrieval.viz import grids as viz
from retrieval.viz.legend import legend_size

THUMB = 64
STEP = THUMB + 2 * viz.FRAME + viz.GAP  # distance between the left edges of two cells
RED_IMG = (200, 60, 160)  # image colours, distinct from every frame colour
BLUE_IMG = (20, 40, 120)
GREY_IMG = (150, 150, 150)
TEAL_IMG = (0, 120, 120)


def solid(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    return img.getpixel(xy)[:3]


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 3) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def runs(values: list[tuple[int, int, int]]) -> list[tuple[tuple[int, int, int], int]]:
    """Run-length encoding of a scanline."""
    out: list[tuple[tuple[int, int, int], int]] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


def frame_colour(img: Image.Image, row: int, col: int) -> tuple[int, int, int]:
    """Colour of the left frame edge of a cell, located from the constants alone."""
    x = viz.GAP + col * STEP + viz.FRAME // 2
    y = viz.HEADER + viz.GAP + row * STEP + viz.FRAME + THUMB // 2
    return pixel(img, (x, y))


def tile_centre(row: int, col: int) -> tuple[int, int]:
    """Centre pixel of a cell's thumbnail."""
    x = viz.GAP + col * STEP + viz.FRAME + THUMB // 2
    return x, viz.HEADER + viz.GAP + row * STEP + viz.FRAME + THUMB // 2


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    return {
        "query": solid(tmp_path / "query.png", (80, 40), GREY_IMG),
        "red": solid(tmp_path / "red.jpg", (30, 30), RED_IMG),
        "blue": solid(tmp_path / "blue.png", (10, 20), BLUE_IMG),
        "teal": solid(tmp_path / "teal.png", (50, 50), TEAL_IMG),
    }


# --------------------------------------------------------------------------------------------------
# labels_for_ranks
# --------------------------------------------------------------------------------------------------


def test_labels_for_ranks_revisited_protocols():
    gnd = {"easy": np.array([1]), "hard": np.array([3]), "junk": np.array([2])}
    ranks = [3, 2, 0, 1]
    assert viz.labels_for_ranks(ranks, gnd) == ["positive", "junk", "negative", "positive"]
    assert viz.labels_for_ranks(ranks, gnd, "easy") == ["junk", "junk", "negative", "positive"]
    assert viz.labels_for_ranks(ranks, gnd, "hard") == ["positive", "junk", "negative", "junk"]
    assert viz.labels_for_ranks(np.array([5, 1]), {"easy": [1], "hard": [], "junk": []}) == [
        "negative",
        "positive",
    ]


def test_labels_for_ranks_ok_junk_and_errors():
    gnd = {"ok": [4, 0], "junk": [7, 0]}  # 0 is both: junk wins, as in the metrics
    assert viz.labels_for_ranks([0, 4, 7, 9], gnd) == ["junk", "positive", "junk", "negative"]
    assert viz.labels_for_ranks([], gnd) == []
    with pytest.raises(ValueError, match="easy"):
        viz.labels_for_ranks([0], {"positives": [0]})
    with pytest.raises(ValueError, match="medium"):
        viz.labels_for_ranks([0], {"easy": [0], "hard": [], "junk": []}, "strict")


# --------------------------------------------------------------------------------------------------
# retrieval_grid
# --------------------------------------------------------------------------------------------------


def test_grid_size_and_frames(tmp_path, images):
    top = 3
    out = viz.retrieval_grid(
        [images["query"], images["query"]],
        [None, None],
        [
            [images["red"], images["blue"], images["teal"], images["red"]],  # 4 > top: cut
            [images["teal"], images["red"]],
        ],
        [["positive", "junk", "negative", "positive"], ["negative", "positive"]],
        tmp_path / "sub" / "grid.png",
        thumb=THUMB,
        top=top,
    )
    assert out == tmp_path / "sub" / "grid.png"
    img = Image.open(out)
    assert img.format == "PNG"
    cells_w = (1 + top) * STEP + viz.GAP
    cells_h = 2 * STEP + viz.GAP
    legend_height = legend_size(viz.grid_keys(), cells_w)[1]  # no box, no mask: 4 keys
    assert img.size == (cells_w, viz.HEADER + cells_h + legend_height)

    assert frame_colour(img, 0, 0) == viz.QUERY_FRAME_COLOUR
    assert frame_colour(img, 0, 1) == viz.POSITIVE_COLOUR
    assert frame_colour(img, 0, 2) == viz.JUNK_COLOUR
    assert frame_colour(img, 0, 3) == viz.NEGATIVE_COLOUR
    assert frame_colour(img, 1, 1) == viz.NEGATIVE_COLOUR
    assert frame_colour(img, 1, 2) == viz.POSITIVE_COLOUR
    assert frame_colour(img, 1, 3) == viz.BACKGROUND  # only two results: the cell stays empty

    # A scanline through the middle of row 0: exactly 1 + top framed cells, in order.
    y = viz.HEADER + viz.GAP + viz.FRAME + THUMB // 2
    scan = [pixel(img, (x, y)) for x in range(img.size[0])]
    line = runs([RED_IMG if close(c, RED_IMG) else c for c in scan])  # the red one is a JPEG
    expected = [(viz.BACKGROUND, viz.GAP)]
    for frame, inside in [
        (viz.QUERY_FRAME_COLOUR, GREY_IMG),
        (viz.POSITIVE_COLOUR, RED_IMG),
        (viz.JUNK_COLOUR, viz.LETTERBOX),  # the tall blue image is letterboxed left and right
        (viz.NEGATIVE_COLOUR, TEAL_IMG),
    ]:
        expected += [(frame, viz.FRAME)]
        if inside == viz.LETTERBOX:
            expected += [(viz.LETTERBOX, 16), (BLUE_IMG, 32), (viz.LETTERBOX, 16)]
        else:
            expected += [(inside, THUMB)]
        expected += [(frame, viz.FRAME), (viz.BACKGROUND, viz.GAP)]
    assert line == expected


def test_thumbnail_keeps_aspect_ratio(tmp_path, images):
    out = viz.retrieval_grid(
        [images["query"]], [None], [[]], [[]], tmp_path / "g.png", thumb=THUMB, top=2
    )
    img = Image.open(out)
    x0, y0 = viz.GAP + viz.FRAME, viz.HEADER + viz.GAP + viz.FRAME  # query tile's corner
    # 80 x 40 -> 64 x 32, centred: rows 0..15 and 48..63 are letterbox.
    column = [pixel(img, (x0 + THUMB // 2, y0 + t)) for t in range(THUMB)]
    assert runs(column) == [(viz.LETTERBOX, 16), (GREY_IMG, 32), (viz.LETTERBOX, 16)]
    assert frame_colour(img, 0, 1) == viz.BACKGROUND


def test_query_box_drawn_in_thumbnail_coordinates(tmp_path, images):
    # 80 x 40 scaled by 0.8 and shifted down by 16: box (20, 10, 60, 30) -> x 16..47, y 24..39.
    out = viz.retrieval_grid(
        [images["query"]],
        [(20, 10, 60, 30)],
        [[images["red"]]],
        [["positive"]],
        tmp_path / "g.png",
        thumb=THUMB,
        top=1,
    )
    img = Image.open(out)
    x0, y0 = viz.GAP + viz.FRAME, viz.HEADER + viz.GAP + viz.FRAME

    def at(x: int, y: int) -> tuple[int, int, int]:
        return pixel(img, (x0 + x, y0 + y))

    box = viz.QUERY_BOX_COLOUR
    assert at(16, 32) == box and at(17, 32) == box  # left edge, BOX_WIDTH = 2
    assert at(47, 32) == box and at(46, 32) == box  # right edge
    assert at(32, 24) == box and at(32, 39) == box  # top and bottom edges
    assert at(32, 32) == GREY_IMG  # inside the box: the image
    assert at(13, 32) == GREY_IMG and at(50, 32) == GREY_IMG  # outside, left and right
    assert at(32, 21) == GREY_IMG and at(32, 42) == GREY_IMG  # outside, above and below
    assert at(32, 8) == viz.LETTERBOX


def test_grid_errors_name_the_problem(tmp_path, images):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.jpg"):
        viz.retrieval_grid([images["query"]], [None], [[broken]], [["negative"]], tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        viz.retrieval_grid([tmp_path / "missing.png"], [None], [[]], [[]], tmp_path / "b")
    with pytest.raises(ValueError, match="'good'"):
        viz.retrieval_grid([images["query"]], [None], [[images["red"]]], [["good"]], tmp_path / "c")
    with pytest.raises(ValueError, match="labels"):
        viz.retrieval_grid([images["query"]], [None], [[images["red"]]], [[]], tmp_path / "d")
    with pytest.raises(ValueError, match="one each"):
        viz.retrieval_grid([images["query"]], [], [[]], [[]], tmp_path / "e")


# --------------------------------------------------------------------------------------------------
# benchmark_grid
# --------------------------------------------------------------------------------------------------


def test_pick_queries_evenly_spaced():
    assert viz.pick_queries(3, 4) == [0, 1, 2]
    assert viz.pick_queries(10, 4) == [0, 3, 6, 9]
    assert viz.pick_queries(10, 1) == [0]


def test_benchmark_grid_uses_protocol(tmp_path, images):
    db = [images["red"], images["blue"], images["teal"], images["query"]]
    bench = RetrievalBenchmark(
        "toy",
        db,
        [images["query"]] * 3,
        [(20, 10, 60, 30), None, None],
        [
            {"easy": np.array([0]), "hard": np.array([1]), "junk": np.array([2])},
            {"easy": np.array([3]), "hard": np.array([], dtype=np.int64), "junk": np.array([0])},
            {"easy": np.array([1]), "hard": np.array([2]), "junk": np.array([], dtype=np.int64)},
        ],
        "revisited",
    )
    ranks = np.array([[1, 2, 3, 0], [0, 1, 2, 3], [2, 1, 0, 3]])
    green, yellow, red = viz.POSITIVE_COLOUR, viz.JUNK_COLOUR, viz.NEGATIVE_COLOUR

    img = Image.open(viz.benchmark_grid(bench, ranks, tmp_path / "m.png", 2, thumb=THUMB, top=3))
    assert img.size == viz.grid_size(2, 3, THUMB, viz.grid_keys(boxes=True))  # query 0's box
    assert [frame_colour(img, 0, c) for c in (1, 2, 3)] == [green, yellow, red]  # query 0
    assert [frame_colour(img, 1, c) for c in (1, 2, 3)] == [green, green, red]  # query 2
    centres = [pixel(img, (x + 4, y)) for x, y in (tile_centre(0, c) for c in (1, 2, 3))]
    assert centres[0] == BLUE_IMG and centres[1] == TEAL_IMG and centres[2] == GREY_IMG
    assert pixel(img, (viz.GAP + viz.FRAME + 16, viz.HEADER + viz.GAP + viz.FRAME + 32)) == (
        viz.QUERY_BOX_COLOUR
    )

    hard = viz.benchmark_grid(bench, ranks, tmp_path / "h.png", protocol="hard", thumb=THUMB, top=3)
    img = Image.open(hard)
    assert img.size == viz.grid_size(3, 3, THUMB, viz.grid_keys(boxes=True))
    assert [frame_colour(img, 0, c) for c in (1, 2, 3)] == [green, yellow, red]
    assert [frame_colour(img, 1, c) for c in (1, 2, 3)] == [yellow, red, red]
    assert [frame_colour(img, 2, c) for c in (1, 2, 3)] == [green, yellow, red]

    with pytest.raises(ValueError, match="ranks.T"):
        viz.benchmark_grid(bench, ranks.T, tmp_path / "t.png")
    with pytest.raises(ValueError, match="outside"):
        viz.benchmark_grid(bench, ranks + 1, tmp_path / "o.png")


def test_benchmark_grid_on_synthetic_world(tmp_path, monkeypatch):
    from retrieval.data.synthetic import SyntheticConfig, ensure_world

    monkeypatch.setenv("RETRIEVAL_DATA", str(tmp_path / "data"))
    config = SyntheticConfig(
        n_train_landmarks=6,
        n_val_landmarks=2,
        n_test_landmarks=3,
        views_per_landmark=8,
        max_side=128,
        workers=1,
    )
    bench = formats.load_revisitop(ensure_world(config=config), "synthetic-rox")
    rng = np.random.default_rng(0)
    db = rng.standard_normal((len(bench.images), 8))
    queries = rng.standard_normal((len(bench.queries), 8))
    ranks = np.argsort(-queries @ db.T, axis=1)
    thumb = 128
    img = Image.open(viz.benchmark_grid(bench, ranks, tmp_path / "grid.png"))
    assert img.size == viz.grid_size(4, 10, 128, viz.grid_keys(boxes=True))
    chosen = viz.pick_queries(len(bench.queries), 4)
    for row, q in enumerate(chosen):
        positives = set(bench.gnd[q]["easy"]) | set(bench.gnd[q]["hard"])
        junk = set(bench.gnd[q]["junk"])
        for k, index in enumerate(ranks[q, :10]):
            expected = (
                viz.JUNK_COLOUR
                if index in junk
                else viz.POSITIVE_COLOUR
                if index in positives
                else viz.NEGATIVE_COLOUR
            )
            x = viz.GAP + (k + 1) * (thumb + 2 * viz.FRAME + viz.GAP) + 1
            y = viz.HEADER + viz.GAP + row * (thumb + 2 * viz.FRAME + viz.GAP) + thumb // 2
            assert pixel(img, (x, y)) == expected, (q, k, index)
