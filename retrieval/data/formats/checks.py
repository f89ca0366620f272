"""Errors and checks shared by the readers: problem collection, required files, indices, boxes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.types import Box


class DatasetFormatError(ValueError):
    """A dataset file exists but its content is malformed or inconsistent."""


class Problems:
    """Collects every problem found in one file so they can be reported together."""

    shown = 5

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        lines = [f"{len(self.items)} problem(s) in {self.path}:"]
        lines += [f"  - {item}" for item in self.items[: self.shown]]
        if len(self.items) > self.shown:
            lines.append(f"  ... and {len(self.items) - self.shown} more")
        raise DatasetFormatError("\n".join(lines))


# --------------------------------------------------------------------------------------------------
# Files that must exist
# --------------------------------------------------------------------------------------------------


def download_command(name: str, root: str | Path) -> str:
    """The shell command that downloads dataset ``name`` under ``root``."""
    return f"python -m retrieval.data download {name.lower()} --root {root}"


def how_to_get(name: str, root: str | Path) -> str:
    """How to obtain dataset ``name``: its download command, or why there is none."""
    from retrieval.data.download import REGISTRY  # lazy: only needed for this message

    if name.lower() in REGISTRY:
        return f"Download it with: {download_command(name, root)}"
    return (
        f"'{name}' is not a downloadable dataset (see python -m retrieval.data download --list): "
        "generate it (synthetic world) or put the files there"
    )


def require(path: Path, what: str, root: str | Path, dataset: str) -> Path:
    """Return ``path`` if it exists, else raise FileNotFoundError with where and how to get it."""
    if path.exists():
        return path
    try:
        relative = path.relative_to(root)
        where = (
            f"<data root>/{relative.as_posix()} (the data root is {root}: "
            "set it with paths.data_root=DIR, or data.root=DIR for train.py alone)"
        )
    except ValueError:
        where = str(path)
    raise FileNotFoundError(
        f"{what} not found: {path}. Expected at {where}. {how_to_get(dataset, root)}"
    )


def check_files(paths: Sequence[Path], problems: Problems, what: str) -> None:
    """Note every path that is not a file."""
    for i, path in enumerate(paths):
        if not path.is_file():
            problems.add(f"{what} {i}: image file missing: {path}")


# --------------------------------------------------------------------------------------------------
# Values read from a file
# --------------------------------------------------------------------------------------------------


def require_keys(obj: Any, keys: Sequence[str], where: str, problems: Problems) -> bool:
    """True when ``obj`` is a dict holding every key; otherwise note what is wrong."""
    if not isinstance(obj, dict):
        problems.add(f"{where}: expected a dict, found {type(obj).__name__}")
        return False
    missing = [k for k in keys if k not in obj]
    if missing:
        problems.add(f"{where}: missing key(s) {missing} (has {sorted(map(str, obj))})")
        return False
    return True


def int_array(values: Any, where: str, problems: Problems) -> np.ndarray:
    """``values`` as a flat int64 array (empty when unreadable, with the problem noted)."""
    try:
        array = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        problems.add(f"{where}: expected a list of integers")
        return np.zeros(0, dtype=np.int64)
    if array.size and not np.all(array == np.round(array)):
        problems.add(f"{where}: expected integers, found non-integer values")
    return array.astype(np.int64)


def check_range(values: np.ndarray, n: int, where: str, problems: Problems) -> None:
    """Note indices outside ``[0, n)`` (the first three, then a count)."""
    bad = np.flatnonzero((values < 0) | (values >= n))
    for pos in bad[:3]:
        problems.add(f"{where}[{pos}] = {values[pos]} is out of range [0, {n})")
    if bad.size > 3:
        problems.add(f"{where}: {bad.size - 3} more out-of-range indices")


def parse_box(value: Any, where: str, problems: Problems) -> Box | None:
    """A stored ``[x1, y1, x2, y2]`` as a Box (None when absent or invalid)."""
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        problems.add(f"{where}: bounding box must be [x1, y1, x2, y2], found {value!r}")
        return None
    if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
        problems.add(f"{where}: bounding box must be [x1, y1, x2, y2] with x2>x1, y2>y1: {box}")
        return None
    return box  # type: ignore[return-value]


def plain_box(box: Sequence[float] | None) -> list[float] | None:
    """A box as a list of Python floats for writing (None stays None)."""
    return None if box is None else [float(v) for v in box]
