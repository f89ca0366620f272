"""Picture retrieval results: one row per query, its top results framed by ground-truth label."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from retrieval.data.transforms import to_rgb
from retrieval.types import Box, RetrievalBenchmark
from retrieval.viz.legend import Key, draw_legend, legend_size

Colour = tuple[int, int, int]

POSITIVE = "positive"
JUNK = "junk"
NEGATIVE = "negative"
LABELS = (POSITIVE, JUNK, NEGATIVE)

POSITIVE_COLOUR: Colour = (30, 170, 60)
JUNK_COLOUR: Colour = (235, 190, 30)
NEGATIVE_COLOUR: Colour = (215, 35, 35)
LABEL_COLOURS: dict[str, Colour] = {
    POSITIVE: POSITIVE_COLOUR,
    JUNK: JUNK_COLOUR,
    NEGATIVE: NEGATIVE_COLOUR,
}
QUERY_FRAME_COLOUR: Colour = (40, 90, 220)
QUERY_BOX_COLOUR: Colour = (0, 230, 255)
MASK_COLOUR: Colour = (255, 0, 255)  # predicted object masks (pixel retrieval), half opaque
BACKGROUND: Colour = (255, 255, 255)
LETTERBOX: Colour = (48, 48, 48)
TEXT_COLOUR: Colour = (0, 0, 0)

FRAME = 4  # frame thickness around each thumbnail
BOX_WIDTH = 2  # line width of the query box
GAP = 4  # background between cells
HEADER = 14  # strip above the grid: column titles
REVISITED_PROTOCOLS = ("easy", "medium", "hard")


# --------------------------------------------------------------------------------------------------
# Ground truth to labels
# --------------------------------------------------------------------------------------------------


def _indices(entry: Mapping[str, Any], key: str) -> np.ndarray:
    return np.asarray(entry.get(key, []), dtype=np.int64).reshape(-1)


def positives_and_junk(
    gnd_entry: Mapping[str, Any], protocol: str = "medium"
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and junk db indices of one query: revisitop ``easy/hard/junk`` or ``ok/junk``."""
    if protocol not in REVISITED_PROTOCOLS:
        raise ValueError(
            f"unknown revisited protocol {protocol!r}; use one of {', '.join(REVISITED_PROTOCOLS)}"
        )
    if "ok" in gnd_entry:
        return _indices(gnd_entry, "ok"), _indices(gnd_entry, "junk")
    if "easy" not in gnd_entry and "hard" not in gnd_entry:
        raise ValueError(
            f"ground-truth entry has keys {sorted(map(str, gnd_entry))}; expected revisitop "
            "'easy'/'hard'/'junk' or 'ok'/'junk'"
        )
    easy, hard, junk = (_indices(gnd_entry, k) for k in ("easy", "hard", "junk"))
    if protocol == "easy":
        return easy, np.concatenate([junk, hard])
    if protocol == "hard":
        return hard, np.concatenate([junk, easy])
    return np.concatenate([easy, hard]), junk


def labels_for_ranks(
    ranks: Sequence[int] | np.ndarray, gnd_entry: Mapping[str, Any], protocol: str = "medium"
) -> list[str]:
    """'positive'/'junk'/'negative' for each ranked db index of one query (best first).

    ``protocol`` applies to revisitop entries only (medium: easy+hard are positives). As in the
    metrics, an index listed both as positive and junk is junk.
    """
    ok, junk = positives_and_junk(gnd_entry, protocol)
    row = np.asarray(ranks, dtype=np.int64).reshape(-1)
    is_junk, is_ok = np.isin(row, junk), np.isin(row, ok)
    return [JUNK if j else POSITIVE if p else NEGATIVE for j, p in zip(is_junk, is_ok, strict=True)]


# --------------------------------------------------------------------------------------------------
# Thumbnails and layout
# --------------------------------------------------------------------------------------------------


def _open_rgb(path: Path, thumb: int) -> tuple[Image.Image, tuple[int, int]]:
    """The image as RGB (possibly JPEG-draft reduced) and its full-resolution size."""
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    try:
        with Image.open(path) as img:
            size = img.size
            img.draft("RGB", (thumb, thumb))  # decode big JPEGs at a reduced scale: much faster
            return to_rgb(img), size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"Corrupt or unreadable image: {path} ({err})") from err


def letterbox(
    path: str | Path, thumb: int, box: Box | None = None
) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """A thumb x thumb tile with the image fitted in, aspect kept, and ``box`` as the tile's
    inclusive pixel rectangle (x1, y1, x2, y2)."""
    img, (w, h) = _open_rgb(Path(path), thumb)
    scale = thumb / max(w, h)
    fit = (max(1, round(w * scale)), max(1, round(h * scale)))
    left, top = (thumb - fit[0]) // 2, (thumb - fit[1]) // 2
    tile = Image.new("RGB", (thumb, thumb), LETTERBOX)
    tile.paste(img.resize(fit, Image.Resampling.BILINEAR), (left, top))
    if box is None:
        return tile, None
    x1, y1, x2, y2 = (float(v) for v in box)
    # Box corners are continuous coordinates; PIL rectangles take inclusive pixel ends.
    mapped = (
        min(thumb - 1, max(0, round(left + x1 * scale))),
        min(thumb - 1, max(0, round(top + y1 * scale))),
        min(thumb - 1, max(0, round(left + x2 * scale) - 1)),
        min(thumb - 1, max(0, round(top + y2 * scale) - 1)),
    )
    return tile, mapped


def cell_size(thumb: int) -> int:
    """Side of one framed cell."""
    return thumb + 2 * FRAME


def cell_origin(row: int, col: int, thumb: int) -> tuple[int, int]:
    """Top-left (x, y) pixel of the frame of cell (row, col); column 0 is the query."""
    step = cell_size(thumb) + GAP
    return GAP + col * step, HEADER + GAP + row * step


def grid_keys(boxes: bool = False, masks: bool = False) -> list[Key]:
    """The legend of a grid: the query's frame (and box), the labels' frames (and the masks)."""
    keys = [Key("query", (QUERY_FRAME_COLOUR,))]
    if boxes:
        keys.append(Key("query box (the region searched)", (QUERY_BOX_COLOUR,), outline=True))
    keys += [Key(label, (LABEL_COLOURS[label],)) for label in LABELS]
    if masks:
        keys.append(Key("tint: the object's predicted mask", (MASK_COLOUR,)))
    return keys


def grid_size(
    n_rows: int, top: int, thumb: int, keys: Sequence[Key] | None = None
) -> tuple[int, int]:
    """(width, height) of a grid of ``n_rows`` queries with ``top`` results each, and its legend
    of ``keys`` (default: :func:`grid_keys` without box nor mask) below."""
    step = cell_size(thumb) + GAP
    width = GAP + (1 + top) * step
    legend_width, legend_height = legend_size(grid_keys() if keys is None else keys, width)
    return legend_width, HEADER + GAP + n_rows * step + legend_height


def _framed(
    draw: ImageDraw.ImageDraw,
    canvas: Image.Image,
    tile: Image.Image,
    xy: tuple[int, int],
    colour: Colour,
) -> None:
    x, y = xy
    side = tile.size[0] + 2 * FRAME
    draw.rectangle((x, y, x + side - 1, y + side - 1), fill=colour)
    canvas.paste(tile, (x + FRAME, y + FRAME))


def overlay_mask(tile: Image.Image, mask: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Tint a letterboxed tile with a boolean mask given at the image's full size (H x W)."""
    thumb = tile.size[0]
    h, w = mask.shape
    scale = thumb / max(w, h)  # the letterbox geometry
    fit = (max(1, round(w * scale)), max(1, round(h * scale)))
    shape = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(fit)
    placed = Image.new("L", tile.size, 0)
    placed.paste(shape, ((thumb - fit[0]) // 2, (thumb - fit[1]) // 2))
    tint = Image.new("RGB", tile.size, MASK_COLOUR)
    return Image.composite(Image.blend(tile, tint, alpha), tile, placed)


# --------------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------------


def retrieval_grid(
    queries: Sequence[str | Path],
    query_boxes: Sequence[Box | None],
    ranked: Sequence[Sequence[str | Path]],
    labels: Sequence[Sequence[str]],
    out_path: str | Path,
    thumb: int = 128,
    top: int = 10,
    masks: Sequence[Sequence[np.ndarray | None]] | None = None,
) -> Path:
    """Write a PNG grid: per row a query (box drawn) then its ``top`` results framed by label.

    Frames are :data:`POSITIVE_COLOUR`, :data:`JUNK_COLOUR` or :data:`NEGATIVE_COLOUR`; the query
    frame is :data:`QUERY_FRAME_COLOUR` and its box :data:`QUERY_BOX_COLOUR`. Rows with fewer
    than ``top`` results leave the remaining cells empty. ``masks[row][k]`` (optional, full-size
    boolean) tints the k-th result with :data:`MASK_COLOUR` (predicted object masks).
    """
    if thumb < 8 or top < 1:
        raise ValueError(f"retrieval_grid: need thumb >= 8 and top >= 1, got {thumb}, {top}")
    if not len(queries) == len(query_boxes) == len(ranked) == len(labels):
        raise ValueError(
            f"retrieval_grid: {len(queries)} queries, {len(query_boxes)} boxes, {len(ranked)} "
            f"ranked lists and {len(labels)} label lists; need one each"
        )
    keys = grid_keys(
        boxes=any(box is not None for box in query_boxes),
        masks=masks is not None and any(m is not None for row in masks for m in row),
    )
    size = grid_size(len(queries), top, thumb, keys)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for col, title in enumerate(["query"] + [str(k + 1) for k in range(top)]):
        draw.text((cell_origin(0, col, thumb)[0] + FRAME, 1), title, fill=TEXT_COLOUR, font=font)
    for row, (query, box, results, row_labels) in enumerate(
        zip(queries, query_boxes, ranked, labels, strict=True)
    ):
        shown = list(results)[:top]
        if len(row_labels) < len(shown):
            raise ValueError(
                f"retrieval_grid: query {row} ({query}) has {len(shown)} results shown but "
                f"{len(row_labels)} labels"
            )
        tile, mapped = letterbox(query, thumb, box)
        if mapped is not None:
            ImageDraw.Draw(tile).rectangle(mapped, outline=QUERY_BOX_COLOUR, width=BOX_WIDTH)
        _framed(draw, canvas, tile, cell_origin(row, 0, thumb), QUERY_FRAME_COLOUR)
        for k, (path, label) in enumerate(zip(shown, row_labels, strict=False)):
            if label not in LABEL_COLOURS:
                raise ValueError(
                    f"retrieval_grid: query {row} result {k}: label {label!r} not in {LABELS}"
                )
            tile, _ = letterbox(path, thumb)
            mask = masks[row][k] if masks is not None and k < len(masks[row]) else None
            if mask is not None:
                tile = overlay_mask(tile, mask)
            _framed(draw, canvas, tile, cell_origin(row, k + 1, thumb), LABEL_COLOURS[label])
    cells_bottom = grid_size(len(queries), top, thumb, [])[1]
    draw_legend(draw, keys, cells_bottom, size[0])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path, format="PNG")
    return out_path


def pick_queries(n_total: int, n_queries: int) -> list[int]:
    """``n_queries`` evenly spaced query indices out of ``n_total``, the first one included."""
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if n_queries >= n_total:
        return list(range(n_total))
    return [int(i) for i in np.unique(np.linspace(0, n_total - 1, n_queries).round())]


def benchmark_grid(
    benchmark: RetrievalBenchmark,
    ranks: np.ndarray,
    out_path: str | Path,
    n_queries: int = 4,
    protocol: str = "medium",
    thumb: int = 128,
    top: int = 10,
    query_indices: Sequence[int] | None = None,
    masks: Mapping[tuple[int, int], np.ndarray] | None = None,
) -> Path:
    """Grid of a benchmark's results from Q x K ``ranks`` (db indices, best first).

    Shows ``query_indices`` or else ``n_queries`` evenly spaced queries; ``protocol``
    (easy/medium/hard) picks the positives of revisited benchmarks (medium: easy + hard).
    ``masks[(q, i)]`` tints result i of query q (predicted object masks, full-size boolean).
    """
    ranks = np.asarray(ranks)
    n_q, n_db = len(benchmark.queries), len(benchmark.images)
    if ranks.ndim != 2 or ranks.shape[0] != n_q:
        raise ValueError(
            f"benchmark_grid: ranks must be {n_q} (queries) x K for {benchmark.name!r}, got shape "
            f"{ranks.shape} (revisitop stores K x Q: pass ranks.T)"
        )
    if ranks.size and (ranks.min() < 0 or ranks.max() >= n_db):
        raise ValueError(f"benchmark_grid: ranks hold indices outside [0, {n_db})")
    chosen = list(query_indices) if query_indices is not None else pick_queries(n_q, n_queries)
    bad = [q for q in chosen if not 0 <= q < n_q]
    if bad:
        raise ValueError(f"benchmark_grid: query indices {bad} outside [0, {n_q})")
    rows = {q: ranks[q, :top] for q in chosen}
    cell_masks = None
    if masks is not None:
        cell_masks = [[masks.get((q, int(i))) for i in rows[q]] for q in chosen]
    return retrieval_grid(
        [benchmark.queries[q] for q in chosen],
        [benchmark.query_boxes[q] for q in chosen],
        [[benchmark.images[i] for i in rows[q]] for q in chosen],
        [labels_for_ranks(rows[q], benchmark.gnd[q], protocol) for q in chosen],
        out_path,
        thumb=thumb,
        top=top,
        masks=cell_masks,
    )
