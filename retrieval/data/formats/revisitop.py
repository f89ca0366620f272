"""Revisited benchmarks (ROxford, RParis, the synthetic world): gnd pickles, R1M, pixel labels.

The gnd pickle layout is cirtorch's test-set layout, shared with the original Oxford/Paris
protocol in :mod:`retrieval.data.formats.classic`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import atomic_write
from retrieval.data.formats.checks import (
    DatasetFormatError,
    Problems,
    check_files,
    check_range,
    how_to_get,
    int_array,
    parse_box,
    plain_box,
    require,
    require_keys,
)
from retrieval.data.formats.safe_pickle import RestrictedUnpickler, load_pickle, write_pickle
from retrieval.types import Box, RetrievalBenchmark

# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------


def test_dir(root: str | Path, name: str) -> Path:
    """Folder of a test set: ``<root>/test/<name>`` (cirtorch layout)."""
    return Path(root) / "test" / name


test_dir.__test__ = False  # type: ignore[attr-defined]  # a path helper, not a pytest test


def gnd_path(root: str | Path, name: str) -> Path:
    """Ground-truth pickle of a test set: ``<root>/test/<name>/gnd_<name>.pkl``."""
    return test_dir(root, name) / f"gnd_{name}.pkl"


def jpg_path(folder: Path, stem: str) -> Path:
    """An image listed by its stem (``.jpg`` added) or by its full file name."""
    return folder / (stem if Path(stem).suffix else f"{stem}.jpg")


def require_listed_images(
    name: str, root: str | Path, gnd_file: Path, images: list[Path], queries: list[Path]
) -> None:
    """Raise FileNotFoundError saying which images the gnd file lists that are missing, and where
    to put them (the annotation files alone, without the photos, are a common half-install)."""
    wanted = list(dict.fromkeys([*images, *queries]))
    missing = [path for path in wanted if not path.is_file()]
    if not missing:
        return
    folders = sorted({str(path.parent) for path in missing})
    shown = ", ".join(path.name for path in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise FileNotFoundError(
        f"{name}: {len(missing)} of the {len(wanted)} images listed in {gnd_file} "
        f"({len(images)} database, {len(queries)} query) are missing: {shown}{more}. "
        f"Put them in {', '.join(folders)} under the names the gnd file lists (imlist, qimlist) "
        f"with .jpg added. {how_to_get(name, root)}"
    )


# --------------------------------------------------------------------------------------------------
# gnd pickles
# --------------------------------------------------------------------------------------------------


def gnd_entry(entry: dict, keys: tuple[str, ...]) -> dict:
    """One query's gnd entry with plain values: its box (if any) and the index lists ``keys``."""
    out: dict[str, Any] = {}
    if entry.get("bbx") is not None:
        out["bbx"] = plain_box(entry["bbx"])
    for key in keys:
        out[key] = [int(i) for i in entry.get(key, [])]
    return out


def write_revisitop_gnd(
    path: str | Path, imlist: list[str], qimlist: list[str], gnd: list[dict]
) -> None:
    """Write a revisitop ``gnd_<name>.pkl`` with ``bbx/easy/hard/junk`` per query."""
    write_pickle(
        path,
        {
            "imlist": [str(x) for x in imlist],
            "qimlist": [str(x) for x in qimlist],
            "gnd": [gnd_entry(g, ("easy", "hard", "junk")) for g in gnd],
        },
    )


def _index_list(entry: dict, key: str, n: int, where: str, problems: Problems) -> np.ndarray:
    values = int_array(entry.get(key), f"{where}['{key}']", problems)
    check_range(values, n, f"{where}['{key}']", problems)
    return values


def read_gnd_pickle(
    path: Path, keys: tuple[str, ...], positives: tuple[str, ...], problems: Problems
) -> tuple[list[str], list[str], list[dict[str, Any]], list[Box | None]]:
    """Validated imlist, qimlist, gnd (with ``keys`` as int arrays) and query boxes."""
    cfg = load_pickle(path)
    if not require_keys(cfg, ("imlist", "qimlist", "gnd"), "gnd file", problems):
        problems.raise_if_any()
    imlist = [str(x) for x in cfg["imlist"]]
    qimlist = [str(x) for x in cfg["qimlist"]]
    if len(cfg["gnd"]) != len(qimlist):
        problems.add(f"{len(cfg['gnd'])} gnd entries for {len(qimlist)} queries; need one each")
    gnd: list[dict[str, Any]] = []
    boxes: list[Box | None] = []
    for q, entry in enumerate(cfg["gnd"]):
        where = f"gnd[{q}] (query {qimlist[q] if q < len(qimlist) else '?'})"
        if not require_keys(entry, keys, where, problems):
            gnd.append({})
            boxes.append(None)
            continue
        item = {k: _index_list(entry, k, len(imlist), where, problems) for k in keys}
        if sum(item[k].size for k in positives) == 0:
            problems.add(f"{where}: no positive images in {'/'.join(positives)}")
        gnd.append(item)
        boxes.append(parse_box(entry.get("bbx"), f"{where}['bbx']", problems))
    return imlist, qimlist, gnd, boxes


# --------------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------------


def read_revisitop1m_list(root: str | Path) -> list[Path]:
    """Image paths of the revisitop 1M distractors listed in ``revisitop1m.txt``."""
    folder = test_dir(root, "revisitop1m")
    listing = require(folder / "revisitop1m.txt", "revisitop1m image list", root, "revisitop1m")
    require(folder / "jpg", "revisitop1m image folder", root, "revisitop1m")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return [jpg_path(folder / "jpg", n) for n in names]


def load_revisitop(
    root: str | Path, name: str, distractors: bool = False, check_images: bool = True
) -> RetrievalBenchmark:
    """Load a revisited benchmark (``roxford5k``, ``rparis6k``, ``synthetic-rox``...).

    Layout: ``<root>/test/<name>/gnd_<name>.pkl`` and ``<root>/test/<name>/jpg/<image>.jpg``;
    with ``distractors`` the revisitop 1M images (``<root>/test/revisitop1m``) are appended to the
    database after the benchmark's own images, so gnd indices stay valid.
    """
    path = require(gnd_path(root, name), f"{name} ground truth", root, name)
    folder = test_dir(root, name) / "jpg"
    problems = Problems(path)
    imlist, qimlist, gnd, boxes = read_gnd_pickle(
        path, ("easy", "hard", "junk"), ("easy", "hard"), problems
    )
    problems.raise_if_any()
    images = [jpg_path(folder, x) for x in imlist]
    queries = [jpg_path(folder, x) for x in qimlist]
    if check_images:
        require_listed_images(name, root, path, images, queries)
    if distractors:
        extra = read_revisitop1m_list(root)
        if check_images:
            listing = Problems(test_dir(root, "revisitop1m") / "revisitop1m.txt")
            check_files(extra, listing, "distractor")
            listing.raise_if_any()
        images = images + extra
        name = f"{name}+r1m"
    return RetrievalBenchmark(name, images, queries, boxes, gnd, "revisited")


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
        obj = RestrictedUnpickler(handle, path).load()
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
