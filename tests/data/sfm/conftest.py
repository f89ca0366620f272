"""Helpers of the SfM tests: a cheap ``describe`` for runs whose pairs are exhaustive."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def mean_colour(paths: Sequence[Path]) -> np.ndarray:
    """Unit-length mean RGB per image: a real, if weak, global descriptor (no network needed)."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float32)
        rows.append(pixels.mean((0, 1)))
    x = np.stack(rows) + 1.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)
