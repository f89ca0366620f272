"""Shared by the retrieval-search tests: photo-like images and the CLI run in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.search.cli import main

FAST = {"image_size": 64, "scales": (1.0,), "progress": False}
FAST_CLI = ["--image-size", "64", "--scales", "1", "--quiet"]


def photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A smooth random photo-like image (colour blobs plus a little noise) saved at `path`."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = Image.fromarray(rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    img = img + rng.integers(-10, 11, img.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run retrieval-search in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
