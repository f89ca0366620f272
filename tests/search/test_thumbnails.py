"""Thumbnails of the result pages: every photo mode shown as it looks, not clipped."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from retrieval.search.html import thumbnail_uri


def _decoded(uri: str) -> np.ndarray:
    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)


def test_sixteen_bit_png_thumbnail_is_mid_gray_not_white(tmp_path):
    path = tmp_path / "deep.png"
    Image.new("I;16", (40, 30), 32896).save(path)  # 32896 / 257 = 128: mid gray
    assert abs(_decoded(thumbnail_uri(path)).mean() - 128) < 3


def test_jpeg_thumbnail_still_drawn_with_its_box(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (400, 300), (200, 200, 200)).save(path)
    assert _decoded(thumbnail_uri(path, box=(10, 10, 100, 100))).shape == (150, 200)
