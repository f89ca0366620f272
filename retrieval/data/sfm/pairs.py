"""Which image pairs COLMAP matches: every pair of a small set, else each image's top-k
neighbours by global descriptor (FAISS), so the cost grows as N*k, not N^2."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.atomic import atomic_write
from retrieval.index import search


def exhaustive_pairs(n: int) -> np.ndarray:
    """Every unordered pair (i < j) of ``n`` images, P x 2."""
    first, second = np.triu_indices(n, k=1)
    return np.stack([first, second], axis=1).astype(np.int64)


def retrieval_pairs(descriptors: np.ndarray, k: int) -> np.ndarray:
    """Unordered pairs (i < j) of each image with its ``k`` nearest neighbours, P x 2, sorted."""
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    n = descriptors.shape[0]
    _, ranks = search(descriptors, descriptors, k=min(n, k + 1))  # +1: itself comes first
    rows = np.repeat(np.arange(n), ranks.shape[1])
    cols = ranks.reshape(-1)
    keep = (cols >= 0) & (cols != rows)
    low, high = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep]
    return np.unique(np.stack([low, high], axis=1), axis=0).reshape(-1, 2)


def choose_pairs(descriptors: np.ndarray, k: int, exhaustive_max: int) -> np.ndarray:
    """Exhaustive pairs up to ``exhaustive_max`` images, retrieval pairs beyond."""
    descriptors = np.asarray(descriptors)
    if descriptors.ndim != 2 or not np.isfinite(descriptors).all():
        raise ValueError(f"descriptors must be a finite N x D array, got shape {descriptors.shape}")
    n = descriptors.shape[0]
    if n <= exhaustive_max:
        return exhaustive_pairs(n)
    return retrieval_pairs(descriptors, k)


def write_pairs(path: Path, pairs: np.ndarray, names: list[str]) -> None:
    """COLMAP's imported pair list: one ``name1 name2`` line per pair."""
    text = "".join(f"{names[a]} {names[b]}\n" for a, b in pairs)
    atomic_write(path, lambda handle: handle.write(text.encode()))


def read_pairs(path: Path, names: list[str]) -> np.ndarray:
    """The pairs written by :func:`write_pairs`, as indices into ``names``."""
    index = {name: i for i, name in enumerate(names)}
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return np.array([(index[a], index[b]) for a, b in rows], dtype=np.int64).reshape(-1, 2)
