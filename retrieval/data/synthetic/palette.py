"""The world's colours, and the random picks that draw from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Colour = tuple[int, int, int]

WALLS: list[Colour] = [
    (214, 196, 160), (176, 92, 70), (232, 222, 200), (160, 160, 155), (240, 238, 232),
    (205, 160, 90), (190, 110, 80), (120, 130, 140), (120, 70, 55), (170, 185, 160),
    (225, 190, 180), (100, 95, 90),
]  # fmt: skip
TRIMS: list[Colour] = [
    (245, 243, 235), (60, 55, 50), (140, 120, 95), (200, 200, 195), (95, 60, 40),
    (180, 170, 150), (40, 60, 80),
]  # fmt: skip
GLASS: list[Colour] = [(40, 55, 75), (25, 30, 35), (70, 90, 110), (55, 70, 60), (90, 110, 130)]
ACCENTS: list[Colour] = [
    (170, 30, 35), (30, 70, 140), (40, 110, 60), (220, 170, 40), (120, 40, 110), (20, 20, 20),
    (230, 120, 30),
]  # fmt: skip
SKIES: list[tuple[Colour, Colour]] = [
    ((70, 130, 200), (185, 212, 235)), ((150, 175, 200), (215, 220, 225)),
    ((150, 155, 160), (205, 205, 205)), ((90, 120, 180), (240, 195, 150)),
    ((55, 70, 120), (215, 160, 130)),
]  # fmt: skip


def pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """One of ``items``, uniformly."""
    return items[int(rng.integers(len(items)))]


def shade(colour: Colour, factor: float) -> Colour:
    """``colour`` darkened (factor < 1) or lightened (> 1)."""
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]
