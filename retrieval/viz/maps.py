"""Pictures of what a network looks at: activation maps, MAC matching regions, distance histograms.

Pure functions of feature maps (C x h x w tensors of one image) and arrays; they return PIL images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps

from retrieval.data.transforms import to_rgb
from retrieval.models.pooling import Pooling
from retrieval.viz.grids import BACKGROUND, LETTERBOX, NEGATIVE_COLOUR, POSITIVE_COLOUR, TEXT_COLOUR
from retrieval.viz.legend import Key, with_legend

Colour = tuple[int, int, int]
Cell = tuple[int, int]  # (row, column) of a feature-map position

HEAT_LOW: Colour = (0, 0, 255)  # heatmap colours: blue (low), yellow, red (high)
HEAT_MID: Colour = (255, 255, 0)
HEAT_HIGH: Colour = (255, 0, 0)
GAP = 4
HEAT_KEY = Key(
    "the pooling's response, low to high (low: the photo left as it is)",
    (HEAT_LOW, HEAT_MID, HEAT_HIGH),
)

# Distance histogram layout (pixels), exposed so that tests can read bars back.
HIST_LEFT = 64  # label column left of the plot
HIST_WIDTH = 320  # plot width
HIST_ROW = 56  # height of one row (one epoch)
HIST_TOP = 18  # legend strip above the rows
HIST_BOTTOM = 16  # tick labels below the rows


# --------------------------------------------------------------------------------------------------
# Activation maps
# --------------------------------------------------------------------------------------------------


def _check_map(features: torch.Tensor, what: str = "features") -> None:
    if features.dim() != 3 or min(features.shape) < 1:
        raise ValueError(f"{what} must be one image's C x h x w map, got {tuple(features.shape)}")


def activation_map(features: torch.Tensor, pooling: Pooling) -> np.ndarray:
    """h x w response behind a pooling, stretched to [0, 1] (weakest to strongest position).

    The pooling says what it responds to (e.g. GeM: each position's share of the pooled sums,
    ``sum_c x^p``; MAC: the maxima each position wins; SPoC: ``sum_c x``).
    """
    _check_map(features)
    x = features.detach().double().clamp(min=0)
    heat = pooling.activation(x).reshape(x.shape[1:])
    heat = heat - heat.min()  # contrast: GeM responses are spread over the whole image
    peak = heat.max()
    return (heat / peak if peak > 0 else heat).float().cpu().numpy()


def overlay_heatmap(image: Image.Image, heat: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """The image with ``heat`` (h x w in [0, 1]) stretched over it: red where it is high."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be an h x w map, got shape {heat.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    grey = Image.fromarray(np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8), "L")
    grey = grey.resize(image.size, Image.Resampling.BILINEAR)
    coloured = ImageOps.colorize(grey, black=HEAT_LOW, white=HEAT_HIGH, mid=HEAT_MID)
    # Opacity grows with the response: unactivated regions keep the photograph visible.
    mask = grey.point(lambda v: round(v * alpha))
    return Image.composite(coloured, to_rgb(image), mask)


# --------------------------------------------------------------------------------------------------
# MAC matching regions (Tolias et al., "Particular object retrieval with integral max-pooling")
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionMatch:
    """A pair of feature-map positions whose MAC channels add ``contribution`` to the cosine."""

    query_cell: Cell
    db_cell: Cell
    contribution: float
    channels: int  # MAC channels whose maxima sit at this pair of positions


def mac_matches(query: torch.Tensor, database: torch.Tensor, top: int = 5) -> list[RegionMatch]:
    """The ``top`` position pairs giving the largest parts of the MAC similarity, largest first.

    Channel c adds ``q_c d_c`` (L2-normalised MAC vectors) to the cosine; it comes from channel
    c's argmax in each map, so channels are grouped by that pair of positions and summed.
    """
    _check_map(query, "query")
    _check_map(database, "database")
    if query.shape[0] != database.shape[0]:
        raise ValueError(f"channel counts differ: {query.shape[0]} vs {database.shape[0]}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    q_val, q_pos = query.detach().double().flatten(1).max(dim=1)
    d_val, d_pos = database.detach().double().flatten(1).max(dim=1)
    contribution = (q_val / q_val.norm().clamp_min(1e-12)) * (d_val / d_val.norm().clamp_min(1e-12))
    n_db = database.shape[1] * database.shape[2]
    pairs, group = torch.unique(q_pos * n_db + d_pos, return_inverse=True)
    sums = torch.zeros(len(pairs), dtype=contribution.dtype).index_add_(0, group, contribution)
    counts = torch.bincount(group, minlength=len(pairs))
    q_w, d_w = query.shape[2], database.shape[2]
    matches = []
    for i in sums.argsort(descending=True)[:top].tolist():
        qp, dp = divmod(int(pairs[i]), n_db)
        matches.append(
            RegionMatch(divmod(qp, q_w), divmod(dp, d_w), float(sums[i]), int(counts[i]))
        )
    return matches


def palette(n: int) -> list[Colour]:
    """``n`` saturated colours with evenly spaced hues."""
    return [ImageColor.getrgb(f"hsv({round(360 * k / max(n, 1))},100%,100%)") for k in range(n)]


def cell_box(
    cell: Cell, map_size: tuple[int, int], image_size: tuple[int, int], grow: float = 0.25
) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x1, y1, x2, y2) of a feature-map cell, ``grow`` cells wider each side.

    ``map_size`` is (h, w) and ``image_size`` PIL's (W, H); the map is taken to span the image.
    """
    (row, col), (h, w), (width, height) = cell, map_size, image_size
    sx, sy = width / w, height / h
    x1, x2 = (col - grow) * sx, (col + 1 + grow) * sx
    y1, y2 = (row - grow) * sy, (row + 1 + grow) * sy
    return (
        max(0, round(x1)),
        max(0, round(y1)),
        min(width - 1, round(x2) - 1),
        min(height - 1, round(y2) - 1),
    )


def draw_matches(
    query_image: Image.Image,
    db_image: Image.Image,
    query_map_size: tuple[int, int],
    db_map_size: tuple[int, int],
    matches: Sequence[RegionMatch],
    width: int = 3,
) -> Image.Image:
    """Query and database image side by side, each match boxed in both in its own colour."""
    query_image, db_image = to_rgb(query_image), to_rgb(db_image)
    left, right = ImageDraw.Draw(query_image), ImageDraw.Draw(db_image)
    for match, colour in zip(matches, palette(len(matches)), strict=True):
        box = cell_box(match.query_cell, query_map_size, query_image.size)
        left.rectangle(box, outline=colour, width=width)
        box = cell_box(match.db_cell, db_map_size, db_image.size)
        right.rectangle(box, outline=colour, width=width)
    return hstack([query_image, db_image])


def activation_legend(picture: Image.Image, thumb: int) -> Image.Image:
    """An activation picture (rows of ``thumb`` tiles: the query crop, then its results) with its
    columns titled and its colours explained."""
    columns = max(1, (picture.width + GAP) // (thumb + GAP))
    titles = [(0, "query (crop)")] + [(c * (thumb + GAP), f"result {c}") for c in range(1, columns)]
    return with_legend(picture, [HEAT_KEY], titles)


def matches_legend(picture: Image.Image, matches: int) -> Image.Image:
    """A MAC-matches picture (rows of a query and its top-1 result) with its layout and its boxes'
    colours explained."""
    keys = [
        Key("left: the query (its crop); right: its top-1 result"),
        Key(
            "one colour per region pair adding most to the MAC similarity",
            tuple(palette(max(1, min(matches, 5)))),
            outline=True,
        ),
    ]
    return with_legend(picture, keys)


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------


def hstack(images: Sequence[Image.Image], gap: int = GAP) -> Image.Image:
    """Images side by side, top-aligned, on the background colour."""
    if not images:
        raise ValueError("hstack needs at least one image")
    width = sum(img.width for img in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(img.height for img in images)), BACKGROUND)
    x = 0
    for img in images:
        canvas.paste(img, (x, 0))
        x += img.width + gap
    return canvas


def vstack(images: Sequence[Image.Image], gap: int = GAP) -> Image.Image:
    """Images one above the other, left-aligned, on the background colour."""
    if not images:
        raise ValueError("vstack needs at least one image")
    height = sum(img.height for img in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (max(img.width for img in images), height), BACKGROUND)
    y = 0
    for img in images:
        canvas.paste(img, (0, y))
        y += img.height + gap
    return canvas


def tile(image: Image.Image, thumb: int) -> Image.Image:
    """The image fitted into a thumb x thumb square, aspect kept (letterboxed)."""
    return ImageOps.pad(to_rgb(image), (thumb, thumb), color=LETTERBOX)


# --------------------------------------------------------------------------------------------------
# Distance distributions
# --------------------------------------------------------------------------------------------------


def similarity_to_distance(similarities: np.ndarray) -> np.ndarray:
    """Euclidean distances between L2-normalised descriptors from their cosine similarities."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(similarities, dtype=np.float64), 0.0, None))


def distance_histograms(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray]],
    bins: int = 40,
    value_range: tuple[float, float] = (0.0, 2.0),
) -> Image.Image:
    """One row per (label, positive distances, negative distances): paired histogram bars.

    In each bin the left half-bar is the query-positive share (green), the right half the
    query-negative share (red); heights are fractions of each set, scaled to the row's maximum.
    """
    if not rows or bins < 1 or not value_range[1] > value_range[0]:
        raise ValueError(f"need rows, bins >= 1 and a valid range; got {len(rows)}, {bins}")
    height = HIST_TOP + HIST_ROW * len(rows) + HIST_BOTTOM
    canvas = Image.new("RGB", (HIST_LEFT + HIST_WIDTH + GAP, height), BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    x = HIST_LEFT
    for name, colour in (("query-positive", POSITIVE_COLOUR), ("query-negative", NEGATIVE_COLOUR)):
        draw.rectangle((x, 4, x + 10, 14), fill=colour)
        draw.text((x + 14, 3), name, fill=TEXT_COLOUR, font=font)
        x += 14 + int(draw.textlength(name, font=font)) + 12
    bin_width = HIST_WIDTH / bins
    for r, (label, positive, negative) in enumerate(rows):
        base = HIST_TOP + (r + 1) * HIST_ROW - 2  # baseline of the row
        shares = []
        for values in (positive, negative):
            counts, _ = np.histogram(np.asarray(values).ravel(), bins=bins, range=value_range)
            shares.append(counts / max(1, counts.sum()))
        scale = (HIST_ROW - 6) / max(1e-12, max(s.max() for s in shares))
        halves = zip(shares, (POSITIVE_COLOUR, NEGATIVE_COLOUR), strict=True)
        for half, (share, colour) in enumerate(halves):
            for b in np.flatnonzero(share):
                x1 = HIST_LEFT + b * bin_width + half * bin_width / 2
                top = base - max(1, round(share[b] * scale))
                draw.rectangle((round(x1), top, round(x1 + bin_width / 2) - 1, base), fill=colour)
        draw.line((HIST_LEFT, base + 1, HIST_LEFT + HIST_WIDTH - 1, base + 1), fill=TEXT_COLOUR)
        draw.text((GAP, base - HIST_ROW // 2), label, fill=TEXT_COLOUR, font=font)
    low, high = value_range
    for k in range(5):  # distance ticks below the last row
        value = low + (high - low) * k / 4
        x = HIST_LEFT + round(HIST_WIDTH * k / 4)
        text = f"{value:g}"
        shift = int(draw.textlength(text, font=font)) if k == 4 else 0
        draw.text((x - shift, height - HIST_BOTTOM + 2), text, fill=TEXT_COLOUR, font=font)
    return canvas
