"""Folders of image files: which files are images, and the folder-per-class layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.data.formats.checks import DatasetFormatError

# Image files read by folder layouts (class folders, the search tool's photo folders).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def sorted_labels(values: set[str]) -> list[str]:
    """Object ids in numeric order when all are integers, else in string order."""
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def read_class_folders(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Images of a folder-per-class layout ``root/<class>/<image>``: paths, labels (indices into
    the sorted class names) and the class names, empty class folders included."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"class folder root not found: {root} (expected root/<class>/<image>)"
        )
    names = sorted_labels({p.name for p in root.iterdir() if p.is_dir()})
    if not names:
        raise DatasetFormatError(f"{root}: no class folders (expected root/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(names):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [k] * len(files)
    return paths, np.array(labels, dtype=np.int64), names
