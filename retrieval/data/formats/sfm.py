"""SfM training data in cirtorch's layout: tuple databases, whitening pairs, positives sidecars."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.atomic import atomic_write
from retrieval.data.formats.checks import (
    Problems,
    check_files,
    check_range,
    int_array,
    parse_box,
    plain_box,
    require,
    require_keys,
)
from retrieval.data.formats.safe_pickle import load_pickle, write_pickle
from retrieval.types import Box

# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------


def cid2filename(cid: str, prefix: str | Path) -> Path:
    """Map a cirtorch image id to its nested path ``prefix/cid[-2:]/cid[-4:-2]/cid[-6:-4]/cid``."""
    return Path(prefix) / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid


def sfm_dir(root: str | Path, name: str) -> Path:
    """Folder of a cirtorch SfM training set: ``<root>/train/<name>``."""
    return Path(root) / "train" / name


def sfm_db_path(root: str | Path, name: str) -> Path:
    """Tuple database pickle: ``<root>/train/<name>/<name>.pkl``."""
    return sfm_dir(root, name) / f"{name}.pkl"


def sfm_whiten_path(root: str | Path, name: str) -> Path:
    """Whitening pairs pickle: ``<root>/train/<name>/<name>-whiten.pkl``."""
    return sfm_dir(root, name) / f"{name}-whiten.pkl"


def sfm_ims_dir(root: str | Path, name: str) -> Path:
    """Image folder of an SfM training set (images nested by :func:`cid2filename`)."""
    return sfm_dir(root, name) / "ims"


# --------------------------------------------------------------------------------------------------
# Tuple database
# --------------------------------------------------------------------------------------------------


def write_sfm_db(path: str | Path, splits: dict[str, dict]) -> None:
    """Write a cirtorch SfM tuple pickle ``{split: {cids, cluster, qidxs, pidxs, bbxs}}``."""
    db: dict[str, dict] = {}
    for name, split in splits.items():
        cids = [str(c) for c in split["cids"]]
        db[name] = {
            "cids": cids,
            "cluster": [int(c) for c in split["cluster"]],
            "qidxs": [int(i) for i in split["qidxs"]],
            "pidxs": [int(i) for i in split["pidxs"]],
            "bbxs": [plain_box(b) for b in split.get("bbxs", [None] * len(split["qidxs"]))],
        }
    write_pickle(path, db)


@dataclass
class SfmSplit:
    """One split ('train'/'val') of a cirtorch SfM tuple database."""

    cids: list[str]
    cluster: np.ndarray
    qidxs: np.ndarray
    pidxs: np.ndarray
    bbxs: list[Box | None]
    image_paths: list[Path]

    def __len__(self) -> int:
        return len(self.cids)


def _read_split(
    name: str, split: dict, ims_dir: Path, problems: Problems, check_images: bool
) -> SfmSplit | None:
    if not require_keys(split, ("cids", "cluster", "qidxs", "pidxs"), f"split '{name}'", problems):
        return None
    cids = [str(c) for c in split["cids"]]
    n = len(cids)
    cluster = int_array(split["cluster"], f"'{name}'.cluster", problems)
    qidxs = int_array(split["qidxs"], f"'{name}'.qidxs", problems)
    pidxs = int_array(split["pidxs"], f"'{name}'.pidxs", problems)
    if cluster.size != n:
        problems.add(f"'{name}': {cluster.size} cluster ids for {n} cids; need one per image")
    if qidxs.size != pidxs.size:
        problems.add(f"'{name}': {qidxs.size} qidxs but {pidxs.size} pidxs; need one positive each")
    check_range(qidxs, n, f"'{name}'.qidxs", problems)
    check_range(pidxs, n, f"'{name}'.pidxs", problems)
    for pos in np.flatnonzero(qidxs[: pidxs.size] == pidxs[: qidxs.size])[:3]:
        problems.add(f"'{name}': pair {pos} uses image {qidxs[pos]} as its own positive")
    raw_bbxs = split.get("bbxs")
    if raw_bbxs is None:
        raw_bbxs = [None] * qidxs.size
    if len(raw_bbxs) != qidxs.size:
        problems.add(f"'{name}': {len(raw_bbxs)} bbxs for {qidxs.size} queries; need one each")
    bbxs = [parse_box(b, f"'{name}'.bbxs[{i}]", problems) for i, b in enumerate(raw_bbxs)]
    paths = [cid2filename(c, ims_dir) for c in cids]
    if check_images:
        check_files(paths, problems, f"'{name}' image")
    return SfmSplit(cids, cluster, qidxs, pidxs, bbxs, paths)


def read_sfm_db(
    path: str | Path, ims_dir: str | Path | None = None, check_images: bool = True
) -> dict[str, SfmSplit]:
    """Read and validate a cirtorch SfM tuple pickle; images live in ``ims`` beside it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SfM tuple database not found: {path}")
    ims_dir = Path(ims_dir) if ims_dir is not None else path.parent / "ims"
    db = load_pickle(path)
    problems = Problems(path)
    splits: dict[str, SfmSplit] = {}
    if not isinstance(db, dict) or not db:
        problems.add("expected a dict of splits such as {'train': {...}, 'val': {...}}")
    else:
        for name, split in db.items():
            result = _read_split(str(name), split, ims_dir, problems, check_images)
            if result is not None:
                splits[str(name)] = result
    problems.raise_if_any()
    return splits


def load_sfm_db(root: str | Path, name: str, check_images: bool = True) -> dict[str, SfmSplit]:
    """Read the tuple database of SfM training set ``name`` in cirtorch's layout under ``root``."""
    path = require(sfm_db_path(root, name), f"{name} tuple database", root, name)
    require(sfm_ims_dir(root, name), f"{name} image folder", root, name)
    return read_sfm_db(path, check_images=check_images)


# --------------------------------------------------------------------------------------------------
# Whitening pairs
# --------------------------------------------------------------------------------------------------


def write_whiten_pairs(
    path: str | Path, cids: list[str], qidxs: list[int], pidxs: list[int]
) -> None:
    """Write a cirtorch whitening-pairs pickle ``{cids, qidxs, pidxs}``."""
    write_pickle(
        path,
        {
            "cids": [str(c) for c in cids],
            "qidxs": [int(i) for i in qidxs],
            "pidxs": [int(i) for i in pidxs],
        },
    )


@dataclass
class WhitenPairs:
    """Matching image pairs used to learn a whitening (cirtorch ``*-whiten.pkl``)."""

    cids: list[str]
    qidxs: np.ndarray
    pidxs: np.ndarray
    image_paths: list[Path]


def read_whiten_pairs(
    path: str | Path, ims_dir: str | Path | None = None, check_images: bool = True
) -> WhitenPairs:
    """Read and validate a whitening pairs pickle; images live in ``ims`` beside it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"whitening pairs file not found: {path}")
    ims_dir = Path(ims_dir) if ims_dir is not None else path.parent / "ims"
    data = load_pickle(path)
    problems = Problems(path)
    if not require_keys(data, ("cids", "qidxs", "pidxs"), "whitening pairs", problems):
        problems.raise_if_any()
    cids = [str(c) for c in data["cids"]]
    qidxs = int_array(data["qidxs"], "qidxs", problems)
    pidxs = int_array(data["pidxs"], "pidxs", problems)
    if qidxs.size != pidxs.size:
        problems.add(f"{qidxs.size} qidxs but {pidxs.size} pidxs; need one partner each")
    check_range(qidxs, len(cids), "qidxs", problems)
    check_range(pidxs, len(cids), "pidxs", problems)
    paths = [cid2filename(c, ims_dir) for c in cids]
    if check_images:
        check_files(paths, problems, "whitening image")
    problems.raise_if_any()
    return WhitenPairs(cids, qidxs, pidxs, paths)


# --------------------------------------------------------------------------------------------------
# Positives sidecar
# --------------------------------------------------------------------------------------------------


def write_positives_sidecar(path: str | Path, candidates: list[list[tuple[int, int]]]) -> None:
    """Write per-image positive candidates of one split as an ``.npz`` in CSR layout.

    Arrays: ``offsets`` (int64, n+1), ``indices`` (int64) and ``inliers`` (int64); the candidates of
    image ``i`` are ``indices[offsets[i]:offsets[i+1]]`` with matching ``inliers`` counts.
    """
    offsets = np.zeros(len(candidates) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in candidates], dtype=np.int64)
    flat = [pair for cands in candidates for pair in cands]
    indices = np.array([int(p[0]) for p in flat], dtype=np.int64)
    inliers = np.array([int(p[1]) for p in flat], dtype=np.int64)

    def write(handle: io.BufferedWriter) -> None:
        np.savez(handle, offsets=offsets, indices=indices, inliers=inliers)

    atomic_write(path, write)


@dataclass
class PositiveCandidates:
    """Per-image positive candidates in CSR layout (see :func:`write_positives_sidecar`)."""

    offsets: np.ndarray
    indices: np.ndarray
    inliers: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def __getitem__(self, image: int) -> list[tuple[int, int]]:
        lo, hi = int(self.offsets[image]), int(self.offsets[image + 1])
        pairs = zip(self.indices[lo:hi], self.inliers[lo:hi], strict=True)
        return [(int(i), int(c)) for i, c in pairs]

    def to_lists(self) -> list[list[tuple[int, int]]]:
        """All candidates as ``[[(positive index, inliers), ...] per image]``."""
        return [self[i] for i in range(len(self))]


def read_positives_sidecar(path: str | Path, n_images: int | None = None) -> PositiveCandidates:
    """Read and validate a positives sidecar ``.npz`` (indices checked against ``n_images``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"positives sidecar not found: {path}")
    problems = Problems(path)
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("offsets", "indices", "inliers") if k not in data.files]
        if missing:
            problems.add(f"missing array(s) {missing} (has {sorted(data.files)})")
            problems.raise_if_any()
        offsets, indices, inliers = (
            data[k].astype(np.int64) for k in ("offsets", "indices", "inliers")
        )
    if offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0:
        problems.add("offsets must be a 1-D array starting at 0 (one entry per image plus one)")
    elif np.any(np.diff(offsets) < 0) or offsets[-1] != indices.size:
        problems.add(f"offsets must be non-decreasing and end at len(indices) = {indices.size}")
    if indices.size != inliers.size:
        problems.add(f"{indices.size} indices but {inliers.size} inlier counts; need one each")
    n = n_images if n_images is not None else max(int(offsets.size) - 1, 0)
    check_range(indices, n, "indices", problems)
    if np.any(inliers < 0):
        problems.add("inlier counts must be >= 0")
    problems.raise_if_any()
    if n_images is not None and offsets.size - 1 != n_images:
        problems.add(f"sidecar covers {offsets.size - 1} images but the split has {n_images}")
        problems.raise_if_any()
    return PositiveCandidates(offsets, indices, inliers)
