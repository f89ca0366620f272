"""The motif bank shared by a world's landmarks, and each landmark's style drawn from it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from retrieval.data.synthetic.palette import ACCENTS, GLASS, TRIMS, WALLS, Colour, pick, shade


def glyphs(
    draw: ImageDraw.ImageDraw,
    box: Sequence[float],
    n: int,
    colour: Colour,
    rng: np.random.Generator,
    width: int,
) -> None:
    """Draw ``n`` glyph-like characters (random strokes) into ``box``."""
    x0, y0, x1, y1 = box
    cw = (x1 - x0) / n
    for k in range(n):
        a, b = x0 + (k + 0.15) * cw, x0 + (k + 0.85) * cw
        for _ in range(int(rng.integers(1, 4))):
            pts = [(rng.uniform(a, b), rng.uniform(y0, y1)) for _ in range(int(rng.integers(2, 4)))]
            draw.line(pts, fill=colour, width=width)


def _window_tile(rng: np.random.Generator) -> Image.Image:
    """A window motif: framed glass with mullions, arched, round, shuttered or with a balcony."""
    w, h = 48, int(rng.integers(60, 90))
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    frame, glass = pick(rng, TRIMS), pick(rng, GLASS)
    shape = pick(rng, ["rect", "rect", "arch", "round", "shutter", "balcony", "pediment"])
    if shape == "round":
        d.ellipse([2, (h - w) / 2 + 2, w - 3, (h + w) / 2 - 3], fill=frame)
        d.ellipse([8, (h - w) / 2 + 8, w - 9, (h + w) / 2 - 9], fill=glass)
        d.line([(w / 2, (h - w) / 2 + 8), (w / 2, (h + w) / 2 - 9)], fill=frame, width=3)
        d.line([(8, h / 2), (w - 9, h / 2)], fill=frame, width=3)
        return im
    top = 14 if shape == "pediment" else 2
    x0, x1 = (12, w - 13) if shape == "shutter" else (4, w - 5)
    d.rectangle([x0 - 3, top, x1 + 3, h - 4], fill=frame)
    gy0 = top + 5
    if shape == "arch":
        r = (x1 - x0) / 2
        d.pieslice([x0, gy0, x1, gy0 + 2 * r], 180, 360, fill=glass)
        d.rectangle([x0, gy0 + r, x1, h - 10], fill=glass)
    else:
        d.rectangle([x0, gy0, x1, h - 10], fill=glass)
    # A lighter streak reads as a reflection on the glass.
    d.polygon(
        [(x0, h - 22), (x0 + 10, gy0 + 6), (x0 + 16, gy0 + 6), (x0 + 6, h - 22)],
        fill=shade(glass, 1.6),
    )
    for k in range(1, int(rng.integers(2, 4))):
        x = x0 + k * (x1 - x0) / int(rng.integers(2, 4))
        d.line([(x, gy0), (x, h - 10)], fill=frame, width=2)
    for k in range(1, int(rng.integers(1, 4))):
        y = gy0 + k * (h - 10 - gy0) / 3
        d.line([(x0, y), (x1, y)], fill=frame, width=2)
    d.rectangle([0, h - 8, w - 1, h - 3], fill=shade(frame, 0.85))
    if shape == "pediment":
        d.polygon([(0, 13), (w / 2, 0), (w - 1, 13)], fill=shade(frame, 0.9))
    elif shape == "shutter":
        colour = pick(rng, ACCENTS)
        for sx in (0, x1 + 4):
            d.rectangle([sx, top, sx + 8, h - 10], fill=colour)
            for y in range(top + 3, h - 10, 4):
                d.line([(sx, y), (sx + 8, y)], fill=shade(colour, 0.7))
    elif shape == "balcony":
        rail = pick(rng, [(30, 30, 30), (80, 60, 40), (200, 200, 200)])
        y0 = h - 28
        d.rectangle([0, y0, w - 1, y0 + 3], fill=rail)
        for x in range(2, w, 5):
            d.line([(x, y0), (x, h - 6)], fill=rail, width=2)
    return im


def _door_tile(rng: np.random.Generator) -> Image.Image:
    """A panelled door, square or arched, in a frame."""
    w, h = 56, 96
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    frame, leaf = pick(rng, TRIMS), pick(rng, ACCENTS + GLASS)
    if rng.random() < 0.5:
        d.pieslice([0, 0, w - 1, w - 1], 180, 360, fill=frame)
        d.pieslice([6, 6, w - 7, w - 7], 180, 360, fill=shade(leaf, 0.7))
        d.rectangle([0, w / 2, w - 1, h - 1], fill=frame)
        top = w / 2
    else:
        d.rectangle([0, 0, w - 1, h - 1], fill=frame)
        top = 6
    d.rectangle([6, top, w - 7, h - 1], fill=leaf)
    for col in (10, w / 2 + 3):
        for k in range(int(rng.integers(2, 4))):
            y = top + 6 + k * 22
            d.rectangle([col, y, col + w / 2 - 16, y + 16], outline=shade(leaf, 0.6), width=2)
    return im


def _sign_tile(rng: np.random.Generator) -> Image.Image:
    """A sign board with glyph-like lettering."""
    w, h = 128, 32
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    board = pick(rng, ACCENTS + TRIMS)
    ink = (245, 240, 225) if sum(board) < 360 else (25, 25, 30)
    d.rectangle([0, 0, w - 1, h - 1], fill=board, outline=shade(board, 0.6), width=2)
    glyphs(d, (6, 6, w - 6, h - 6), int(rng.integers(4, 9)), ink, rng, 3)
    return im


def _emblem_tile(rng: np.random.Generator) -> Image.Image:
    """A round emblem: clock face, rose window or star."""
    s = 64
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    ring, face = pick(rng, TRIMS), pick(rng, [*GLASS, (240, 235, 220), *ACCENTS])
    d.ellipse([0, 0, s - 1, s - 1], fill=ring)
    d.ellipse([6, 6, s - 7, s - 7], fill=face)
    kind = pick(rng, ["clock", "rose", "star"])
    c = s / 2
    if kind == "star":
        k = int(rng.integers(5, 9))
        pts = [
            (c + (24 if i % 2 == 0 else 11) * math.cos(math.pi * i / k),
             c + (24 if i % 2 == 0 else 11) * math.sin(math.pi * i / k))
            for i in range(2 * k)
        ]  # fmt: skip
        d.polygon(pts, fill=ring)
    else:
        k = 12 if kind == "clock" else int(rng.integers(6, 11))
        for i in range(k):
            a = 2 * math.pi * i / k
            inner = 20 if kind == "clock" else 6
            d.line(
                [
                    (c + inner * math.cos(a), c + inner * math.sin(a)),
                    (c + 25 * math.cos(a), c + 25 * math.sin(a)),
                ],
                fill=ring,
                width=3,
            )
        if kind == "clock":
            a1, a2 = rng.uniform(0, 2 * math.pi, 2)
            d.line([(c, c), (c + 16 * math.cos(a1), c + 16 * math.sin(a1))], fill=ring, width=4)
            d.line([(c, c), (c + 10 * math.cos(a2), c + 10 * math.sin(a2))], fill=ring, width=4)
    return im


def _ornament_tile(rng: np.random.Generator) -> Image.Image:
    """A small decorative panel: diamond, cross, checker, stripes or a blob cluster."""
    s = 48
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    a, b = pick(rng, ACCENTS + TRIMS), pick(rng, TRIMS + WALLS)
    kind = pick(rng, ["diamond", "cross", "checker", "stripes", "blobs"])
    if kind == "diamond":
        d.polygon([(s / 2, 0), (s - 1, s / 2), (s / 2, s - 1), (0, s / 2)], fill=a)
        d.polygon([(s / 2, 12), (s - 13, s / 2), (s / 2, s - 13), (12, s / 2)], fill=b)
    elif kind == "cross":
        d.rectangle([s / 2 - 7, 0, s / 2 + 7, s - 1], fill=a)
        d.rectangle([0, s / 2 - 7, s - 1, s / 2 + 7], fill=a)
    elif kind == "checker":
        n = int(rng.integers(3, 6))
        for i in range(n):
            for j in range(n):
                colour = a if (i + j) % 2 else b
                d.rectangle([i * s / n, j * s / n, (i + 1) * s / n, (j + 1) * s / n], fill=colour)
    elif kind == "stripes":
        n = int(rng.integers(3, 7))
        for i in range(n):
            d.rectangle([0, i * s / n, s - 1, (i + 0.5) * s / n], fill=a)
    else:
        for _ in range(int(rng.integers(4, 9))):
            x, y, r = rng.uniform(8, s - 8), rng.uniform(8, s - 8), rng.uniform(5, 12)
            d.ellipse([x - r, y - r, x + r, y + r], fill=pick(rng, [a, b]))
    return im


@dataclass
class MotifBank:
    """Motif tiles and colours shared by every landmark of a world."""

    windows: list[Image.Image]
    doors: list[Image.Image]
    signs: list[Image.Image]
    emblems: list[Image.Image]
    ornaments: list[Image.Image]


@lru_cache(maxsize=4)
def motif_bank(seed: int) -> MotifBank:
    """The world's motif bank (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 0xBA4C])
    return MotifBank(
        windows=[_window_tile(rng) for _ in range(28)],
        doors=[_door_tile(rng) for _ in range(8)],
        signs=[_sign_tile(rng) for _ in range(8)],
        emblems=[_emblem_tile(rng) for _ in range(6)],
        ornaments=[_ornament_tile(rng) for _ in range(10)],
    )


@dataclass
class Style:
    """How one landmark composes its facades from the bank."""

    wall: Colour
    trim: Colour
    windows: list[Image.Image]
    door: Image.Image
    pattern: str
    floor_h: float
    ground_h: float
    bay_w: float
    win_w: float
    win_h: float
    cornice: bool
    pilasters: bool
    brick: bool
    rusticated: bool
    top: str
    sign: Image.Image | None
    emblem: Image.Image | None
    ornament: Image.Image | None
    lettering_seed: int


def sample_style(rng: np.random.Generator, bank: MotifBank) -> Style:
    """A landmark's style: colours, three of the bank's windows, proportions and features."""
    picks = rng.choice(len(bank.windows), size=3, replace=False)
    return Style(
        wall=pick(rng, WALLS),
        trim=pick(rng, TRIMS),
        windows=[bank.windows[int(i)] for i in picks],
        door=pick(rng, bank.doors),
        pattern=pick(rng, ["uniform", "alternate", "floors", "mirror", "centre"]),
        floor_h=float(rng.uniform(2.6, 3.8)),
        ground_h=float(rng.uniform(3.0, 4.6)),
        bay_w=float(rng.uniform(1.7, 3.2)),
        win_w=float(rng.uniform(0.38, 0.62)),
        win_h=float(rng.uniform(0.5, 0.75)),
        cornice=bool(rng.random() < 0.65),
        pilasters=bool(rng.random() < 0.4),
        brick=bool(rng.random() < 0.35),
        rusticated=bool(rng.random() < 0.4),
        top=pick(rng, ["flat", "flat", "gable", "stepped", "crenel", "dome"]),
        sign=pick(rng, bank.signs) if rng.random() < 0.5 else None,
        emblem=pick(rng, bank.emblems) if rng.random() < 0.55 else None,
        ornament=pick(rng, bank.ornaments) if rng.random() < 0.5 else None,
        lettering_seed=int(rng.integers(2**31)),
    )
