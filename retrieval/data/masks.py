"""Mask and polygon geometry (no I/O): bounding boxes, rasterised polygons, traced outlines.

Boxes are ``(x1, y1, x2, y2)`` in pixel edges (a one-pixel box at column 3 is ``x1=3, x2=4``);
masks are boolean ``H x W`` arrays; polygons are ``N x 2`` arrays of ``(x, y)`` pixel centres.
Polygons are rasterised with PIL (filled, outline included), which matches OpenCV's ``fillPoly``
used by PROxford's official code up to its boundary rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from retrieval.types import Box

# Moore neighbourhood in clockwise order on screen (rows grow downwards), starting west.
_DIRECTIONS = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
_DIRECTION_INDEX = {d: i for i, d in enumerate(_DIRECTIONS)}


def mask_box(mask: np.ndarray) -> Box | None:
    """Bounding box (pixel edges) of a mask's True pixels, or None when it has none."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y1, y2 = np.flatnonzero(rows)[[0, -1]]
    x1, x2 = np.flatnonzero(cols)[[0, -1]]
    return float(x1), float(y1), float(x2 + 1), float(y2 + 1)


def polygons_to_mask(polygons: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Union of filled polygons ((x, y) points) as a boolean mask of size (H, W)."""
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        points = [tuple(float(v) for v in p) for p in np.asarray(polygon).reshape(-1, 2)]
        if len(points) >= 3:
            draw.polygon(points, fill=1, outline=1)
        elif len(points) == 2:
            draw.line(points, fill=1)
        elif points:
            draw.point(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def _trace(mask: np.ndarray, start: tuple[int, int]) -> list[tuple[int, int]]:
    """Outer boundary pixels (row, col) of the 8-connected component of `start`, clockwise.

    Moore-neighbour tracing: `start` is the component's first pixel in raster order, so its west
    neighbour is background; tracing stops when it leaves `start` the way it first did.
    """
    height, width = mask.shape

    def inside(r: int, c: int) -> bool:
        return 0 <= r < height and 0 <= c < width and bool(mask[r, c])

    contour, current, back = [start], start, 0  # back: direction of the background pixel
    first_step = None
    while True:
        for turn in range(1, 9):
            d = (back + turn) % 8
            nxt = (current[0] + _DIRECTIONS[d][0], current[1] + _DIRECTIONS[d][1])
            if inside(*nxt):
                break
        else:
            return contour  # an isolated pixel
        if current == start and nxt == first_step:
            return contour[:-1]  # back at the start, about to repeat the first step
        if first_step is None:
            first_step = nxt
        # The neighbour scanned just before `nxt` is background; it is 8-adjacent to `nxt`.
        prev = _DIRECTIONS[(d - 1) % 8]
        back = _DIRECTION_INDEX[(current[0] + prev[0] - nxt[0], current[1] + prev[1] - nxt[1])]
        current = nxt
        contour.append(current)


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Keep only the corners of a closed pixel path (where the step direction changes)."""
    if len(points) < 3:
        return points
    step_in = points - np.roll(points, 1, axis=0)
    step_out = np.roll(points, -1, axis=0) - points
    return points[np.any(step_in != step_out, axis=1)]


def mask_to_polygons(mask: np.ndarray, min_area: int = 1) -> list[np.ndarray]:
    """Outer outlines ((x, y) pixel centres, int) of a mask's 8-connected components.

    Filling the polygons with :func:`polygons_to_mask` gives back the mask with its holes filled
    (labelme polygons have no holes, and annotators outline objects whole). Components with
    fewer than `min_area` pixels once filled are left out.
    """
    remaining = np.asarray(mask, dtype=bool).copy()
    polygons = []
    while remaining.any():
        flat = int(np.argmax(remaining))  # first pixel in raster order
        start = divmod(flat, remaining.shape[1])
        outline = np.array(_trace(remaining, start))[:, ::-1]  # (row, col) -> (x, y)
        outline = _drop_collinear(outline)
        filled = polygons_to_mask([outline], remaining.shape)
        if np.count_nonzero(filled) >= min_area:
            polygons.append(outline.astype(np.int64))
        remaining &= ~filled
        remaining[start] = False  # guarantees progress on degenerate outlines
    return polygons
