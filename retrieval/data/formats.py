"""Read and write every on-disk dataset format used by retrieval (SfM tuples, gnd files, CSVs)."""

from __future__ import annotations

import _compat_pickle
import csv
import io
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import atomic_write

PICKLE_PROTOCOL = 4


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def cid2filename(cid: str, prefix: str | Path) -> Path:
    """Map a cirtorch image id to its nested path ``prefix/cid[-2:]/cid[-4:-2]/cid[-6:-4]/cid``."""
    return Path(prefix) / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid


def _write_pickle(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda h: pickle.dump(obj, h, protocol=PICKLE_PROTOCOL))


def _write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda h: h.write(text.encode("utf-8")))


def _plain_box(box: Sequence[float] | None) -> list[float] | None:
    return None if box is None else [float(v) for v in box]


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
            "bbxs": [_plain_box(b) for b in split.get("bbxs", [None] * len(split["qidxs"]))],
        }
    _write_pickle(path, db)


def write_whiten_pairs(
    path: str | Path, cids: list[str], qidxs: list[int], pidxs: list[int]
) -> None:
    """Write a cirtorch whitening-pairs pickle ``{cids, qidxs, pidxs}``."""
    _write_pickle(
        path,
        {
            "cids": [str(c) for c in cids],
            "qidxs": [int(i) for i in qidxs],
            "pidxs": [int(i) for i in pidxs],
        },
    )


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


def _gnd_entry(entry: dict, keys: tuple[str, ...]) -> dict:
    out: dict[str, Any] = {}
    if entry.get("bbx") is not None:
        out["bbx"] = _plain_box(entry["bbx"])
    for key in keys:
        out[key] = [int(i) for i in entry.get(key, [])]
    return out


def write_revisitop_gnd(
    path: str | Path, imlist: list[str], qimlist: list[str], gnd: list[dict]
) -> None:
    """Write a revisitop ``gnd_<name>.pkl`` with ``bbx/easy/hard/junk`` per query."""
    _write_pickle(
        path,
        {
            "imlist": [str(x) for x in imlist],
            "qimlist": [str(x) for x in qimlist],
            "gnd": [_gnd_entry(g, ("easy", "hard", "junk")) for g in gnd],
        },
    )


def write_oxford_gnd(
    path: str | Path, imlist: list[str], qimlist: list[str], gnd: list[dict]
) -> None:
    """Write an old-protocol Oxford/Paris gnd pickle with ``bbx/ok/junk`` per query (cirtorch)."""
    _write_pickle(
        path,
        {
            "imlist": [str(x) for x in imlist],
            "qimlist": [str(x) for x in qimlist],
            "gnd": [_gnd_entry(g, ("ok", "junk")) for g in gnd],
        },
    )


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_gldv2_train_csv(path: str | Path, ids: list[str], landmark_ids: list[int]) -> None:
    """Write a GLDv2 ``train.csv`` (``id,url,landmark_id``; the url column is left empty)."""
    if len(ids) != len(landmark_ids):
        raise ValueError(
            f"write_gldv2_train_csv: {len(ids)} ids but {len(landmark_ids)} landmark_ids; "
            "pass one landmark id per image id"
        )
    rows = [(i, "", int(lm)) for i, lm in zip(ids, landmark_ids, strict=True)]
    _write_text(path, _csv_text(("id", "url", "landmark_id"), rows))


GENERIC_COLUMNS = ("path", "object_id", "role", "x1", "y1", "x2", "y2", "junk")


def write_generic_groundtruth(path: str | Path, rows: list[dict]) -> None:
    """Write a generic ``groundtruth.csv`` (``path,object_id[,role,x1,y1,x2,y2,junk]``).

    Each row is a dict with ``path`` and ``object_id`` and optionally ``role``
    (``query``/``database``), a box as ``bbx=[x1,y1,x2,y2]`` or ``x1..y2`` keys, and ``junk``
    (truthy: this database image is ignored for queries of the same object). Only columns used by
    some row are written; missing values are empty cells.
    """
    flat: list[dict[str, Any]] = []
    for row in rows:
        item = dict(row)
        box = item.pop("bbx", None)
        if box is not None:
            item.update(zip(("x1", "y1", "x2", "y2"), box, strict=True))
        if "junk" in item and item["junk"] is not None:
            item["junk"] = int(bool(item["junk"]))
        flat.append(item)
    used = {k for item in flat for k, v in item.items() if v is not None}
    unknown = used - set(GENERIC_COLUMNS)
    if unknown:
        raise ValueError(
            f"write_generic_groundtruth: unknown column(s) {sorted(unknown)}; "
            f"allowed: {', '.join(GENERIC_COLUMNS)}"
        )
    header = [c for c in GENERIC_COLUMNS if c in used or c in ("path", "object_id")]
    body = [["" if item.get(c) is None else item[c] for c in header] for item in flat]
    _write_text(path, _csv_text(header, body))


# --------------------------------------------------------------------------------------------------
# Errors, problem collection and layout
# --------------------------------------------------------------------------------------------------


class DatasetFormatError(ValueError):
    """A dataset file exists but its content is malformed or inconsistent."""


class _Problems:
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


def download_command(name: str, root: str | Path) -> str:
    """The shell command that downloads dataset ``name`` under ``root``."""
    return f"python -m retrieval.data download {name.lower()} --root {root}"


def _how_to_get(name: str, root: str | Path) -> str:
    from retrieval.data.download import REGISTRY  # lazy: only needed for this message

    if name.lower() in REGISTRY:
        return f"Download it with: {download_command(name, root)}"
    return (
        f"'{name}' is not a downloadable dataset (see python -m retrieval.data download --list): "
        "generate it (synthetic world) or put the files there"
    )


def _require(path: Path, what: str, root: str | Path, dataset: str) -> Path:
    """Return ``path`` if it exists, else raise FileNotFoundError with where and how to get it."""
    if path.exists():
        return path
    try:
        relative = path.relative_to(root)
        where = f"data.root/{relative.as_posix()} (data.root = {root})"
    except ValueError:
        where = str(path)
    raise FileNotFoundError(
        f"{what} not found: {path}. Expected at {where}. {_how_to_get(dataset, root)}"
    )


def _check_files(paths: Sequence[Path], problems: _Problems, what: str) -> None:
    for i, path in enumerate(paths):
        if not path.is_file():
            problems.add(f"{what} {i}: image file missing: {path}")


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


def test_dir(root: str | Path, name: str) -> Path:
    """Folder of a test set: ``<root>/test/<name>`` (cirtorch layout)."""
    return Path(root) / "test" / name


test_dir.__test__ = False  # type: ignore[attr-defined]  # a path helper, not a pytest test


def gnd_path(root: str | Path, name: str) -> Path:
    """Ground-truth pickle of a test set: ``<root>/test/<name>/gnd_<name>.pkl``."""
    return test_dir(root, name) / f"gnd_{name}.pkl"


def gldv2_dir(root: str | Path) -> Path:
    """Folder of Google Landmarks v2: ``<root>/gldv2`` (CSV files and train/index/test images)."""
    return Path(root) / "gldv2"


def gldv2_image_path(images_root: str | Path, image_id: str) -> Path:
    """GLDv2 image path ``<images_root>/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``."""
    return Path(images_root) / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


# --------------------------------------------------------------------------------------------------
# Restricted pickle loading
# --------------------------------------------------------------------------------------------------


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy callables that array/dtype/scalar pickles reference, under 1.x and 2.x names."""
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


_SAFE_BUILTINS = (
    "list",
    "dict",
    "tuple",
    "set",
    "frozenset",
    "bytes",
    "bytearray",
    "complex",
    "slice",
)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import builtins
    import codecs
    import collections

    allowed = {("builtins", name): getattr(builtins, name) for name in _SAFE_BUILTINS}
    # Python 3 stores bytes in protocol-2 pickles (numpy buffers) as _codecs.encode(str, 'latin1')
    allowed[("_codecs", "encode")] = codecs.encode
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed.update(_numpy_globals())
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only plain containers and numpy arrays, dtypes and scalars."""

    def __init__(self, file: io.BufferedReader, path: Path) -> None:
        # latin1 decodes Python 2 ``str`` objects (and numpy buffers) of the published pickles
        super().__init__(file, encoding="latin1")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set, ...) are mapped as the default find_class would
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self._path}: refusing to load global '{module}.{name}'; dataset pickles may "
                "only hold lists, dicts, strings, numbers and numpy arrays. Re-create the file "
                "with plain containers if you trust it."
            ) from None


def load_pickle(path: str | Path) -> Any:
    """Load a dataset pickle allowing only builtin containers/scalars and numpy data."""
    path = Path(path)
    with path.open("rb") as handle:
        try:
            return _RestrictedUnpickler(handle, path).load()
        except pickle.UnpicklingError as err:
            if str(path) in str(err):
                raise
            raise pickle.UnpicklingError(f"{path}: not a valid pickle ({err})") from err
        except (EOFError, ValueError, TypeError, IndexError, KeyError) as err:
            raise pickle.UnpicklingError(f"{path}: not a valid pickle ({err})") from err


def _require_keys(obj: Any, keys: Sequence[str], where: str, problems: _Problems) -> bool:
    if not isinstance(obj, dict):
        problems.add(f"{where}: expected a dict, found {type(obj).__name__}")
        return False
    missing = [k for k in keys if k not in obj]
    if missing:
        problems.add(f"{where}: missing key(s) {missing} (has {sorted(map(str, obj))})")
        return False
    return True


def _int_array(values: Any, where: str, problems: _Problems) -> np.ndarray:
    try:
        array = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        problems.add(f"{where}: expected a list of integers")
        return np.zeros(0, dtype=np.int64)
    if array.size and not np.all(array == np.round(array)):
        problems.add(f"{where}: expected integers, found non-integer values")
    return array.astype(np.int64)


def _check_range(values: np.ndarray, n: int, where: str, problems: _Problems) -> None:
    bad = np.flatnonzero((values < 0) | (values >= n))
    for pos in bad[:3]:
        problems.add(f"{where}[{pos}] = {values[pos]} is out of range [0, {n})")
    if bad.size > 3:
        problems.add(f"{where}: {bad.size - 3} more out-of-range indices")


Box = tuple[float, float, float, float]


def _box(value: Any, where: str, problems: _Problems) -> Box | None:
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


# --------------------------------------------------------------------------------------------------
# SfM training data (cirtorch)
# --------------------------------------------------------------------------------------------------


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
    name: str, split: dict, ims_dir: Path, problems: _Problems, check_images: bool
) -> SfmSplit | None:
    if not _require_keys(split, ("cids", "cluster", "qidxs", "pidxs"), f"split '{name}'", problems):
        return None
    cids = [str(c) for c in split["cids"]]
    n = len(cids)
    cluster = _int_array(split["cluster"], f"'{name}'.cluster", problems)
    qidxs = _int_array(split["qidxs"], f"'{name}'.qidxs", problems)
    pidxs = _int_array(split["pidxs"], f"'{name}'.pidxs", problems)
    if cluster.size != n:
        problems.add(f"'{name}': {cluster.size} cluster ids for {n} cids; need one per image")
    if qidxs.size != pidxs.size:
        problems.add(f"'{name}': {qidxs.size} qidxs but {pidxs.size} pidxs; need one positive each")
    _check_range(qidxs, n, f"'{name}'.qidxs", problems)
    _check_range(pidxs, n, f"'{name}'.pidxs", problems)
    for pos in np.flatnonzero(qidxs[: pidxs.size] == pidxs[: qidxs.size])[:3]:
        problems.add(f"'{name}': pair {pos} uses image {qidxs[pos]} as its own positive")
    raw_bbxs = split.get("bbxs")
    if raw_bbxs is None:
        raw_bbxs = [None] * qidxs.size
    if len(raw_bbxs) != qidxs.size:
        problems.add(f"'{name}': {len(raw_bbxs)} bbxs for {qidxs.size} queries; need one each")
    bbxs = [_box(b, f"'{name}'.bbxs[{i}]", problems) for i, b in enumerate(raw_bbxs)]
    paths = [cid2filename(c, ims_dir) for c in cids]
    if check_images:
        _check_files(paths, problems, f"'{name}' image")
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
    problems = _Problems(path)
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
    path = _require(sfm_db_path(root, name), f"{name} tuple database", root, name)
    _require(sfm_ims_dir(root, name), f"{name} image folder", root, name)
    return read_sfm_db(path, check_images=check_images)


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
    problems = _Problems(path)
    if not _require_keys(data, ("cids", "qidxs", "pidxs"), "whitening pairs", problems):
        problems.raise_if_any()
    cids = [str(c) for c in data["cids"]]
    qidxs = _int_array(data["qidxs"], "qidxs", problems)
    pidxs = _int_array(data["pidxs"], "pidxs", problems)
    if qidxs.size != pidxs.size:
        problems.add(f"{qidxs.size} qidxs but {pidxs.size} pidxs; need one partner each")
    _check_range(qidxs, len(cids), "qidxs", problems)
    _check_range(pidxs, len(cids), "pidxs", problems)
    paths = [cid2filename(c, ims_dir) for c in cids]
    if check_images:
        _check_files(paths, problems, "whitening image")
    problems.raise_if_any()
    return WhitenPairs(cids, qidxs, pidxs, paths)


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
    problems = _Problems(path)
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
    _check_range(indices, n, "indices", problems)
    if np.any(inliers < 0):
        problems.add("inlier counts must be >= 0")
    problems.raise_if_any()
    if n_images is not None and offsets.size - 1 != n_images:
        problems.add(f"sidecar covers {offsets.size - 1} images but the split has {n_images}")
        problems.raise_if_any()
    return PositiveCandidates(offsets, indices, inliers)


# --------------------------------------------------------------------------------------------------
# Evaluation benchmarks
# --------------------------------------------------------------------------------------------------

PROTOCOLS = ("revisited", "oxford", "ukbench", "holidays", "gldv2", "generic")


@dataclass
class RetrievalBenchmark:
    """A retrieval test set: database images, queries (with optional boxes) and ground truth.

    ``gnd[q]`` holds int64 index arrays into ``images``: 'easy'/'hard'/'junk' for the revisited
    protocol, 'ok'/'junk' for all others. When a query is itself a database image
    (``query_db_index[q] >= 0``; UKBench, Holidays, generic leave-one-out) that image is listed in
    its 'junk' so that it counts neither as a hit nor a miss.
    """

    name: str
    images: list[Path]
    queries: list[Path]
    query_boxes: list[Box | None]
    gnd: list[dict[str, Any]]
    protocol: str
    labels: list[str] | None = None
    query_labels: list[str] | None = None
    query_db_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"benchmark {self.name!r}: unknown protocol {self.protocol!r}; "
                f"use one of {', '.join(PROTOCOLS)}"
            )
        if not len(self.queries) == len(self.query_boxes) == len(self.gnd):
            raise ValueError(
                f"benchmark {self.name!r}: {len(self.queries)} queries, "
                f"{len(self.query_boxes)} boxes and {len(self.gnd)} gnd entries; need one each"
            )

    @property
    def query_in_db(self) -> bool:
        """True when the queries are database images (leave-one-out evaluation)."""
        return self.query_db_index is not None and bool(np.any(self.query_db_index >= 0))


def _index_list(entry: dict, key: str, n: int, where: str, problems: _Problems) -> np.ndarray:
    values = _int_array(entry.get(key), f"{where}['{key}']", problems)
    _check_range(values, n, f"{where}['{key}']", problems)
    return values


def _read_gnd_pickle(
    path: Path, keys: tuple[str, ...], positives: tuple[str, ...], problems: _Problems
) -> tuple[list[str], list[str], list[dict[str, Any]], list[Box | None]]:
    """Validated imlist, qimlist, gnd (with ``keys`` as int arrays) and query boxes."""
    cfg = load_pickle(path)
    if not _require_keys(cfg, ("imlist", "qimlist", "gnd"), "gnd file", problems):
        problems.raise_if_any()
    imlist = [str(x) for x in cfg["imlist"]]
    qimlist = [str(x) for x in cfg["qimlist"]]
    if len(cfg["gnd"]) != len(qimlist):
        problems.add(f"{len(cfg['gnd'])} gnd entries for {len(qimlist)} queries; need one each")
    gnd: list[dict[str, Any]] = []
    boxes: list[Box | None] = []
    for q, entry in enumerate(cfg["gnd"]):
        where = f"gnd[{q}] (query {qimlist[q] if q < len(qimlist) else '?'})"
        if not _require_keys(entry, keys, where, problems):
            gnd.append({})
            boxes.append(None)
            continue
        item = {k: _index_list(entry, k, len(imlist), where, problems) for k in keys}
        if sum(item[k].size for k in positives) == 0:
            problems.add(f"{where}: no positive images in {'/'.join(positives)}")
        gnd.append(item)
        boxes.append(_box(entry.get("bbx"), f"{where}['bbx']", problems))
    return imlist, qimlist, gnd, boxes


def _jpg(folder: Path, stem: str) -> Path:
    return folder / (stem if Path(stem).suffix else f"{stem}.jpg")


def read_revisitop1m_list(root: str | Path) -> list[Path]:
    """Image paths of the revisitop 1M distractors listed in ``revisitop1m.txt``."""
    folder = test_dir(root, "revisitop1m")
    listing = _require(folder / "revisitop1m.txt", "revisitop1m image list", root, "revisitop1m")
    _require(folder / "jpg", "revisitop1m image folder", root, "revisitop1m")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return [_jpg(folder / "jpg", n) for n in names]


def load_revisitop(
    root: str | Path, name: str, distractors: bool = False, check_images: bool = True
) -> RetrievalBenchmark:
    """Load a revisited benchmark (``roxford5k``, ``rparis6k``, ``synthetic-rox``...).

    Layout: ``<root>/test/<name>/gnd_<name>.pkl`` and ``<root>/test/<name>/jpg/<image>.jpg``;
    with ``distractors`` the revisitop 1M images (``<root>/test/revisitop1m``) are appended to the
    database after the benchmark's own images, so gnd indices stay valid.
    """
    path = _require(gnd_path(root, name), f"{name} ground truth", root, name)
    folder = _require(test_dir(root, name) / "jpg", f"{name} image folder", root, name)
    problems = _Problems(path)
    imlist, qimlist, gnd, boxes = _read_gnd_pickle(
        path, ("easy", "hard", "junk"), ("easy", "hard"), problems
    )
    images = [_jpg(folder, x) for x in imlist]
    queries = [_jpg(folder, x) for x in qimlist]
    if check_images:
        _check_files(images, problems, "database image")
        _check_files(queries, problems, "query image")
    problems.raise_if_any()
    if distractors:
        extra = read_revisitop1m_list(root)
        if check_images:
            listing = _Problems(test_dir(root, "revisitop1m") / "revisitop1m.txt")
            _check_files(extra, listing, "distractor")
            listing.raise_if_any()
        images = images + extra
        name = f"{name}+r1m"
    return RetrievalBenchmark(name, images, queries, boxes, gnd, "revisited")


def load_oxford(root: str | Path, name: str, check_images: bool = True) -> RetrievalBenchmark:
    """Load ``oxford5k``/``paris6k`` with the original ``ok``/``junk`` gnd (cirtorch layout)."""
    path = _require(gnd_path(root, name), f"{name} ground truth", root, name)
    folder = _require(test_dir(root, name) / "jpg", f"{name} image folder", root, name)
    problems = _Problems(path)
    imlist, qimlist, gnd, boxes = _read_gnd_pickle(path, ("ok", "junk"), ("ok",), problems)
    images = [_jpg(folder, x) for x in imlist]
    queries = [_jpg(folder, x) for x in qimlist]
    if check_images:
        _check_files(images, problems, "database image")
        _check_files(queries, problems, "query image")
    problems.raise_if_any()
    return RetrievalBenchmark(name, images, queries, boxes, gnd, "oxford")


def _group_benchmark(
    name: str,
    protocol: str,
    images: list[Path],
    labels: list[str],
    is_query: list[bool],
    junk: list[bool],
    problems: _Problems,
    boxes: list[Box | None] | None = None,
) -> RetrievalBenchmark:
    """Leave-one-out benchmark: each query retrieves the other images of its object."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    queries, gnd, qidx = [], [], []
    for i, label in enumerate(labels):
        if not is_query[i]:
            continue
        group = [j for j in by_label[label] if j != i]
        ok = np.array([j for j in group if not junk[j]], dtype=np.int64)
        if ok.size == 0:
            problems.add(f"query {images[i]} (object {label}): no other image of its object")
        bad = sorted([j for j in group if junk[j]] + [i])
        gnd.append({"ok": ok, "junk": np.array(bad, dtype=np.int64)})
        queries.append(images[i])
        qidx.append(i)
    problems.raise_if_any()
    return RetrievalBenchmark(
        name,
        images,
        queries,
        [boxes[i] if boxes else None for i in qidx],
        gnd,
        protocol,
        labels=labels,
        query_labels=[labels[i] for i in qidx],
        query_db_index=np.array(qidx, dtype=np.int64),
    )


def _find_image_dir(root: Path, name: str, candidates: Sequence[str]) -> Path:
    """First existing folder ``<root>/test/<name>/<c>``, ``<root>/<name>/<c>`` or ``<root>/<c>``."""
    options = [root / "test" / name / c for c in candidates]
    options += [root / name / c for c in candidates] + [root / c for c in candidates]
    for option in options:
        if option.is_dir():
            return option
    return _require(options[0], f"{name} image folder", root, name)


def load_ukbench(root: str | Path) -> RetrievalBenchmark:
    """Load UKBench (``ukbench%05d.jpg``, object = index // 4; every image is a query).

    Images are searched in ``<root>/test/ukbench/{full,images}``, ``<root>/ukbench/...`` and
    ``<root>/{full,images}``.
    """
    folder = _find_image_dir(Path(root), "ukbench", ("full", "images"))
    found = sorted(folder.glob("ukbench[0-9][0-9][0-9][0-9][0-9].jpg"))
    if not found:
        raise FileNotFoundError(
            f"no ukbench%05d.jpg images in {folder}. "
            f"Download them with: {download_command('ukbench', root)}"
        )
    labels = [str(int(p.stem[len("ukbench") :]) // 4) for p in found]
    n = len(found)
    return _group_benchmark(
        "ukbench", "ukbench", found, labels, [True] * n, [False] * n, _Problems(folder)
    )


def load_holidays(root: str | Path) -> RetrievalBenchmark:
    """Load INRIA Holidays (``NNNNNN.jpg``, group = number // 100, query = first of each group).

    Images are searched in ``<root>/test/holidays/jpg``, ``<root>/holidays/jpg`` and
    ``<root>/jpg``. All images form the database; each query's own image is junk.
    """
    folder = _find_image_dir(Path(root), "holidays", ("jpg",))
    found = sorted(p for p in folder.glob("*.jpg") if p.stem.isdigit() and len(p.stem) == 6)
    if not found:
        raise FileNotFoundError(
            f"no NNNNNN.jpg images in {folder}. "
            f"Download them with: {download_command('holidays', root)}"
        )
    labels = [str(int(p.stem) // 100) for p in found]
    is_query = [i == 0 or labels[i] != labels[i - 1] for i in range(len(found))]
    return _group_benchmark(
        "holidays", "holidays", found, labels, is_query, [False] * len(found), _Problems(folder)
    )


# --------------------------------------------------------------------------------------------------
# CSV formats: Google Landmarks v2 and generic folders
# --------------------------------------------------------------------------------------------------


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header that must contain ``required`` columns."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetFormatError(
                f"{path}: missing column(s) {missing}; the header is {header}, "
                f"expected at least {list(required)}"
            )
        reader.fieldnames = header
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


@dataclass
class GldTrainSet:
    """Google Landmarks v2 training images with their landmark ids."""

    ids: list[str]
    landmark_ids: np.ndarray
    image_paths: list[Path]
    empty_landmarks: list[int] = field(default_factory=list)  # train_clean rows without images


def read_gldv2_train(
    csv_path: str | Path, images_dir: str | Path | None = None, check_images: bool = False
) -> GldTrainSet:
    """Read GLDv2 ``train.csv`` (``id,url,landmark_id``) or ``train_clean.csv``
    (``landmark_id,images`` with space-separated ids); images under ``train/`` beside the CSV."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GLDv2 training CSV not found: {path}. "
            f"Download it with: {download_command('gldv2-train', path.parent.parent)}"
        )
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    problems = _Problems(path)
    ids: list[str] = []
    landmarks: list[int] = []
    empty: list[int] = []
    if "images" in header:
        rows = _read_csv(path, ("landmark_id", "images"))
        for r, row in enumerate(rows):
            lm = _parse_int(row["landmark_id"], f"row {r + 2} landmark_id", problems)
            if not row["images"].split():
                empty.append(lm)
            for image_id in row["images"].split():
                ids.append(image_id)
                landmarks.append(lm)
    else:
        rows = _read_csv(path, ("id", "landmark_id"))
        for r, row in enumerate(rows):
            ids.append(row["id"])
            landmarks.append(_parse_int(row["landmark_id"], f"row {r + 2} landmark_id", problems))
    for i, image_id in enumerate(ids):
        if len(image_id) < 3:
            problems.add(f"image {i}: id {image_id!r} is too short to locate its file")
    problems.raise_if_any()
    images_dir = Path(images_dir) if images_dir is not None else path.parent / "train"
    paths = [gldv2_image_path(images_dir, i) for i in ids]
    if check_images:
        _check_files(paths, problems, "training image")
        problems.raise_if_any()
    return GldTrainSet(ids, np.array(landmarks, dtype=np.int64), paths, empty)


def _parse_int(text: str, where: str, problems: _Problems) -> int:
    try:
        return int(text)
    except ValueError:
        problems.add(f"{where}: expected an integer, found {text!r}")
        return -1


GLDV2_USAGES = ("Public", "Private", "Ignored")


@dataclass
class GldQuery:
    """One row of GLDv2 ``retrieval_solution_v2.1.csv``: a test image and its index matches."""

    id: str
    images: list[str]
    usage: str


def read_gldv2_solution(csv_path: str | Path) -> list[GldQuery]:
    """Read ``retrieval_solution_v2.1.csv`` (``id,images,Usage``; ``images`` 'None' if ignored)."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"GLDv2 retrieval solution not found: {path}")
    problems = _Problems(path)
    queries = []
    for r, row in enumerate(_read_csv(path, ("id", "images", "Usage"))):
        if row["Usage"] not in GLDV2_USAGES:
            problems.add(
                f"row {r + 2} (id {row['id']}): Usage {row['Usage']!r} not in {GLDV2_USAGES}"
            )
        images = [] if row["images"] in ("", "None") else row["images"].split()
        queries.append(GldQuery(row["id"], images, row["Usage"]))
    problems.raise_if_any()
    return queries


def _read_id_column(path: Path) -> list[str]:
    return [row["id"] for row in _read_csv(path, ("id",))]


def load_gldv2(
    root: str | Path, usage: str = "private", check_images: bool = True
) -> RetrievalBenchmark:
    """Load the GLDv2 retrieval benchmark: ``test`` queries against the ``index`` images.

    ``usage`` selects the scored queries: 'public', 'private' or 'all' (both); ignored queries
    are always dropped. Layout: ``<root>/gldv2/{index.csv, retrieval_solution_v2.1.csv}``,
    images in ``<root>/gldv2/{index,test}/a/b/c/<id>.jpg``.
    """
    wanted = {"public": {"Public"}, "private": {"Private"}, "all": {"Public", "Private"}}
    if usage not in wanted:
        raise ValueError(f"load_gldv2: usage must be one of {sorted(wanted)}, got {usage!r}")
    folder = gldv2_dir(root)
    index_csv = _require(folder / "index.csv", "GLDv2 index list", root, "gldv2")
    solution_csv = _require(
        folder / "retrieval_solution_v2.1.csv", "GLDv2 retrieval solution", root, "gldv2"
    )
    index_ids = _read_id_column(index_csv)
    position = {image_id: i for i, image_id in enumerate(index_ids)}
    problems = _Problems(solution_csv)
    queries, gnd = [], []
    for query in read_gldv2_solution(solution_csv):
        if query.usage not in wanted[usage]:
            continue
        unknown = [i for i in query.images if i not in position]
        if unknown:
            problems.add(f"query {query.id}: index image(s) {unknown[:3]} not in {index_csv.name}")
        ok = np.array([position[i] for i in query.images if i in position], dtype=np.int64)
        if ok.size == 0 and not unknown:
            problems.add(f"query {query.id}: no positive index images")
        queries.append(gldv2_image_path(folder / "test", query.id))
        gnd.append({"ok": ok, "junk": np.zeros(0, dtype=np.int64)})
    images = [gldv2_image_path(folder / "index", i) for i in index_ids]
    if check_images:
        _check_files(images, problems, "index image")
        _check_files(queries, problems, "test image")
    problems.raise_if_any()
    return RetrievalBenchmark(
        f"gldv2-{usage}", images, queries, [None] * len(queries), gnd, "gldv2"
    )


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"", "0", "false", "no", "n", "f"}


def _generic_rows(root: Path, csv_name: str) -> tuple[Path, list[dict[str, str]]]:
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"ground truth CSV not found: {csv_path}. A generic dataset is a folder with a "
            f"'{csv_name}' listing 'path,object_id' (paths relative to the folder)."
        )
    return csv_path, _read_csv(csv_path, ("path", "object_id"))


def load_generic(
    root: str | Path, csv_name: str = "groundtruth.csv", check_images: bool = True
) -> RetrievalBenchmark:
    """Load a folder of images described by ``groundtruth.csv``.

    Columns: ``path`` (relative to ``root``) and ``object_id`` are required; other columns not
    listed here are ignored. Optional:

    * ``role``: ``query`` or ``database``. Without it (leave-one-out) every image is a query
      against all the others; with it, queries search the database rows only.
    * ``x1,y1,x2,y2``: bounding box used when the row is a query (empty cells: whole image).
    * ``junk``: 1/true marks a database image of the object that is too hard to count; it is
      neither a positive nor a negative for queries of the same object and is never a query.

    Positives of a query are the other non-junk database images with the same ``object_id``.
    """
    root = Path(root)
    csv_path, rows = _generic_rows(root, csv_name)
    problems = _Problems(csv_path)
    has_role = any(row.get("role") for row in rows)
    paths, labels, roles, junk, boxes = [], [], [], [], []
    for r, row in enumerate(rows):
        where = f"row {r + 2} ({row['path'] or '<empty path>'})"
        if not row["path"] or not row["object_id"]:
            problems.add(f"{where}: 'path' and 'object_id' must not be empty")
        role = row.get("role", "").lower() or ("query+database" if not has_role else "")
        if role not in ("query", "database", "query+database"):
            problems.add(f"{where}: role {row.get('role')!r} must be 'query' or 'database'")
        flag = row.get("junk", "").lower()
        if flag not in _TRUE | _FALSE:
            problems.add(f"{where}: junk {row.get('junk')!r} must be 0/1 or true/false")
        cells = [row.get(k, "") for k in ("x1", "y1", "x2", "y2")]
        box = None
        if any(cells):
            try:
                box = _box([float(c) for c in cells], f"{where} box", problems)
            except ValueError:
                problems.add(f"{where}: box cells x1,y1,x2,y2 must all be numbers: {cells}")
        paths.append(root / row["path"])
        labels.append(row["object_id"])
        roles.append(role)
        junk.append(flag in _TRUE)
        boxes.append(box)
    if check_images:
        _check_files(paths, problems, "image")
    if not has_role:
        is_query = [not j for j in junk]  # a junk image is database-only
        return _group_benchmark(
            root.name, "generic", paths, labels, is_query, junk, problems, boxes
        )
    problems.raise_if_any()
    return _role_benchmark(root.name, paths, labels, roles, junk, boxes, problems)


def _role_benchmark(
    name: str,
    paths: list[Path],
    labels: list[str],
    roles: list[str],
    junk: list[bool],
    boxes: list[Box | None],
    problems: _Problems,
) -> RetrievalBenchmark:
    """Queries (role=query) against database rows (role=database), matched by object id."""
    db = [i for i, role in enumerate(roles) if role == "database"]
    images = [paths[i] for i in db]
    db_labels = [labels[i] for i in db]
    db_position = {paths[i]: k for k, i in enumerate(db)}
    queries, gnd, qboxes, qlabels, qidx = [], [], [], [], []
    for i, role in enumerate(roles):
        if role != "query":
            continue
        same = [k for k, i_db in enumerate(db) if labels[i_db] == labels[i]]
        ok = [k for k in same if not junk[db[k]] and images[k] != paths[i]]
        bad = [k for k in same if junk[db[k]]]
        own = db_position.get(paths[i], -1)
        if own >= 0:
            bad.append(own)
        if not ok:
            problems.add(f"query {paths[i]} (object {labels[i]}): no database image of its object")
        queries.append(paths[i])
        gnd.append({"ok": np.array(ok, dtype=np.int64), "junk": np.unique(np.array(bad, np.int64))})
        qboxes.append(boxes[i])
        qlabels.append(labels[i])
        qidx.append(own)
    if not queries:
        problems.add("no row has role 'query'")
    problems.raise_if_any()
    return RetrievalBenchmark(
        name,
        images,
        queries,
        qboxes,
        gnd,
        "generic",
        labels=db_labels,
        query_labels=qlabels,
        query_db_index=np.array(qidx, dtype=np.int64),
    )


def _sorted_labels(values: set[str]) -> list[str]:
    """Object ids in numeric order when all are integers, else in string order."""
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def read_labelled_images(
    root: str | Path, csv_name: str = "groundtruth.csv", check_images: bool = True
) -> tuple[list[Path], np.ndarray]:
    """Image paths and contiguous class labels (0..K-1, in sorted object_id order) of a generic
    folder, for training from labels; every row is used whatever its role."""
    root = Path(root)
    csv_path, rows = _generic_rows(root, csv_name)
    problems = _Problems(csv_path)
    for r, row in enumerate(rows):
        if not row["path"] or not row["object_id"]:
            problems.add(f"row {r + 2}: 'path' and 'object_id' must not be empty")
    paths = [root / row["path"] for row in rows]
    if check_images:
        _check_files(paths, problems, "image")
    problems.raise_if_any()
    classes = {label: k for k, label in enumerate(_sorted_labels({r["object_id"] for r in rows}))}
    labels = np.array([classes[row["object_id"]] for row in rows], dtype=np.int64)
    return paths, labels


# Image files read by folder layouts (class folders, the search tool's photo folders).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def read_class_folders(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Images of a folder-per-class layout ``root/<class>/<image>``: paths, labels (indices into
    the sorted class names) and the class names, empty class folders included."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"class folder root not found: {root} (expected root/<class>/<image>)"
        )
    names = _sorted_labels({p.name for p in root.iterdir() if p.is_dir()})
    if not names:
        raise DatasetFormatError(f"{root}: no class folders (expected root/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(names):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [k] * len(files)
    return paths, np.array(labels, dtype=np.int64), names


# --------------------------------------------------------------------------------------------------
# Pixel retrieval ground truth (PROxford / PRParis: labelme polygons per query-positive pair)
# --------------------------------------------------------------------------------------------------

PIXEL_BENCHMARKS_DIR = "pixel_retrieval_benchmarks"
_PIXEL_PREFIXES = {"roxford5k": "oxford", "rparis6k": "paris"}


def pixel_gt_dir(root: str | Path, name: str) -> Path:
    """Folder of a benchmark's pixel labels: the published archive's folder for ROxford/RParis
    (``<root>/test/pixel_retrieval_benchmarks``), ``<root>/test/<name>/pixel`` otherwise."""
    if name in _PIXEL_PREFIXES:
        return test_dir(root, PIXEL_BENCHMARKS_DIR)
    return test_dir(root, name) / "pixel"


def pair_labels_path(root: str | Path, name: str) -> Path:
    """The ``<prefix>_pair2labelpath.npy`` map of a benchmark (prefix oxford, paris or name)."""
    return pixel_gt_dir(root, name) / f"{_PIXEL_PREFIXES.get(name, name)}_pair2labelpath.npy"


def write_labelme(
    path: str | Path,
    polygons: Sequence[np.ndarray],
    image_size: tuple[int, int],
    image_path: str,
    label: str = "object",
) -> None:
    """Write polygons ((x, y) points) as a labelme JSON file; image_size is (W, H)."""
    shapes = [
        {
            "label": label,
            "points": np.asarray(p, dtype=np.float64).reshape(-1, 2).tolist(),
            "group_id": None,
            "shape_type": "polygon",
            "flags": {},
        }
        for p in polygons
    ]
    doc = {
        "version": "5.0.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageWidth": int(image_size[0]),
        "imageHeight": int(image_size[1]),
    }
    _write_text(path, json.dumps(doc))


def read_labelme(path: str | Path) -> tuple[list[np.ndarray], tuple[int, int] | None]:
    """Polygons ((x, y) float arrays; rectangles as 4 corners) and (W, H) of a labelme file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        polygons = []
        for shape in doc["shapes"]:
            points = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
            if shape.get("shape_type") == "rectangle" and len(points) == 2:
                (x1, y1), (x2, y2) = points
                points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
            polygons.append(points)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetFormatError(f"{path}: not a labelme annotation ({err})") from err
    size = None
    if doc.get("imageWidth") and doc.get("imageHeight"):
        size = (int(doc["imageWidth"]), int(doc["imageHeight"]))
    return polygons, size


def write_pair_labels(path: str | Path, labels: dict[tuple[int, int], str]) -> None:
    """Write the ``{'q_i': relative label path}`` map as the benchmark's ``.npy`` dict."""
    mapping = {f"{q}_{i}": str(rel) for (q, i), rel in labels.items()}
    atomic_write(path, lambda h: np.save(h, np.array(mapping, dtype=object), allow_pickle=True))


def read_pair_labels(path: str | Path) -> dict[tuple[int, int], str]:
    """Read a ``<prefix>_pair2labelpath.npy`` map into ``{(query, db index): relative path}``.

    The file is a pickled dict inside a ``.npy``; it is unpickled with the restricted unpickler
    (containers, strings and numpy data only), not with ``np.load(allow_pickle=True)``.
    """
    path = Path(path)
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_{version[1]}")
            read_header(handle)
        except (ValueError, AttributeError) as err:
            raise DatasetFormatError(f"{path}: not a .npy file ({err})") from err
        obj = _RestrictedUnpickler(handle, path).load()
    mapping = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(mapping, dict):
        raise DatasetFormatError(f"{path}: expected a dict 'q_i' -> label path, found {type(obj)}")
    out: dict[tuple[int, int], str] = {}
    for key, rel in mapping.items():
        q, _, i = str(key).partition("_")
        if not (q.isdigit() and i.isdigit()):
            raise DatasetFormatError(f"{path}: key {key!r} is not '<query>_<db index>'")
        out[(int(q), int(i))] = str(rel)
    return out


def load_pixel_groundtruth(root: str | Path, name: str) -> dict[tuple[int, int], Path]:
    """Label file of every annotated (query, db index) pair of a benchmark."""
    path = pair_labels_path(root, name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} pixel labels not found: {path}. For roxford5k/rparis6k extract the "
            f"published pixel_retrieval_benchmarks archive (An et al. ICCV'23) into {path.parent}"
        )
    return {pair: path.parent / rel for pair, rel in read_pair_labels(path).items()}
