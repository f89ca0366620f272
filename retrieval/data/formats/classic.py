"""The classic benchmarks: Oxford5k/Paris6k (original ``ok/junk`` gnd), UKBench and Holidays."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.data.formats.checks import Problems, download_command, parse_box, require
from retrieval.data.formats.generic import group_benchmark
from retrieval.data.formats.revisitop import (
    gnd_entry,
    gnd_path,
    jpg_path,
    read_gnd_pickle,
    require_listed_images,
    test_dir,
)
from retrieval.data.formats.safe_pickle import write_pickle
from retrieval.types import Box, RetrievalBenchmark

log = logging.getLogger(__name__)


def write_oxford_gnd(
    path: str | Path, imlist: list[str], qimlist: list[str], gnd: list[dict]
) -> None:
    """Write an old-protocol Oxford/Paris gnd pickle with ``bbx/ok/junk`` per query (cirtorch)."""
    write_pickle(
        path,
        {
            "imlist": [str(x) for x in imlist],
            "qimlist": [str(x) for x in qimlist],
            "gnd": [gnd_entry(g, ("ok", "junk")) for g in gnd],
        },
    )


@dataclass(frozen=True)
class GtQuery:
    """One query of the original Oxford/Paris ground-truth text files (``gt_files``)."""

    name: str  # the files' prefix, e.g. all_souls_1
    image: str  # the query image's stem (Oxford's ``oxc1_`` prefix removed)
    box: Box
    good: tuple[str, ...]
    ok: tuple[str, ...]
    junk: tuple[str, ...]


_GT_KINDS = ("good", "ok", "junk")


def gt_files_dir(root: str | Path, name: str) -> Path:
    """Folder of the original text ground truth: ``<root>/test/<name>/gt_files``."""
    return test_dir(root, name) / "gt_files"


def _read_names(path: Path, problems: Problems) -> tuple[str, ...]:
    if not path.is_file():
        problems.add(f"{path.name} is missing (every query has _query, _good, _ok, _junk files)")
        return ()
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def read_gt_files(folder: str | Path) -> list[GtQuery]:
    """The queries of an original Oxford5k/Paris6k ``gt_files`` folder, sorted by name.

    Each query ``NAME`` has ``NAME_query.txt`` (``image x1 y1 x2 y2``) and ``NAME_good.txt``,
    ``NAME_ok.txt``, ``NAME_junk.txt`` (one image stem per line), as in the published archives.
    """
    folder = Path(folder)
    problems = Problems(folder)
    files = sorted(folder.glob("*_query.txt"))
    if not files:
        raise FileNotFoundError(f"no *_query.txt files in {folder} (original Oxford/Paris gt)")
    queries = []
    for file in files:
        stem = file.name[: -len("_query.txt")]
        fields = file.read_text().split()
        box = None
        if len(fields) == 5:
            box = parse_box([_number(v) for v in fields[1:]], f"{file.name} box", problems)
        else:
            problems.add(f"{file.name}: expected 'image x1 y1 x2 y2', found {' '.join(fields)!r}")
        lists = [_read_names(folder / f"{stem}_{kind}.txt", problems) for kind in _GT_KINDS]
        image = fields[0].removeprefix("oxc1_") if fields else ""
        placeholder = (0.0, 0.0, 0.0, 0.0)  # only when a problem is noted: raised below
        queries.append(GtQuery(stem, image, box or placeholder, *lists))
    problems.raise_if_any()
    return queries


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")  # parse_box reports it


def oxford_gnd_from_gt_files(
    queries: list[GtQuery], imlist: list[str], problems: Problems, imlist_source: str = "imlist"
) -> list[dict[str, np.ndarray]]:
    """Old-protocol gnd (``ok`` = good + ok, ``junk``) as indices into ``imlist``."""
    index = {stem: i for i, stem in enumerate(imlist)}
    gnd = []
    for query in queries:
        unknown = [x for x in (*query.good, *query.ok, *query.junk) if x not in index]
        if unknown:
            problems.add(
                f"{query.name}: {len(unknown)} image(s) not in {imlist_source}: {unknown[:3]}"
            )
        ok = [index[x] for x in (*query.good, *query.ok) if x in index]
        junk = [index[x] for x in query.junk if x in index]
        gnd.append({"ok": np.array(ok, np.int64), "junk": np.array(junk, np.int64)})
    return gnd


def load_oxford(root: str | Path, name: str, check_images: bool = True) -> RetrievalBenchmark:
    """Load ``oxford5k``/``paris6k`` with the original ``ok``/``junk`` gnd.

    From cirtorch's ``<root>/test/<name>/gnd_<name>.pkl``, or else from the published text files
    in ``<root>/test/<name>/gt_files/`` (the database is then every ``jpg/*.jpg``).
    """
    folder = test_dir(root, name) / "jpg"
    if not gnd_path(root, name).exists() and gt_files_dir(root, name).is_dir():
        return _load_oxford_text(root, name, folder)
    path = require(gnd_path(root, name), f"{name} ground truth", root, name)
    problems = Problems(path)
    imlist, qimlist, gnd, boxes = read_gnd_pickle(path, ("ok", "junk"), ("ok",), problems)
    problems.raise_if_any()
    images = [jpg_path(folder, x) for x in imlist]
    queries = [jpg_path(folder, x) for x in qimlist]
    if check_images:
        require_listed_images(name, root, path, images, queries)
    return RetrievalBenchmark(name, images, queries, boxes, gnd, "oxford")


def _load_oxford_text(root: str | Path, name: str, folder: Path) -> RetrievalBenchmark:
    """The old-protocol benchmark from ``gt_files`` text files and the images in ``folder``."""
    gt = read_gt_files(gt_files_dir(root, name))
    require(folder, f"{name} image folder", root, name)
    imlist = sorted(p.stem for p in folder.glob("*.jpg"))
    problems = Problems(gt_files_dir(root, name))
    gnd = oxford_gnd_from_gt_files(gt, imlist, problems, f"the images of {folder}")
    problems.raise_if_any()
    queries = [jpg_path(folder, q.image) for q in gt]
    require_listed_images(name, root, gt_files_dir(root, name), [], queries)
    images = [jpg_path(folder, x) for x in imlist]
    return RetrievalBenchmark(name, images, queries, [q.box for q in gt], gnd, "oxford")


def _find_image_dir(root: Path, name: str, candidates: Sequence[str]) -> Path:
    """First existing folder ``<root>/test/<name>/<c>``, ``<root>/<name>/<c>`` or ``<root>/<c>``."""
    options = [root / "test" / name / c for c in candidates]
    options += [root / name / c for c in candidates] + [root / c for c in candidates]
    for option in options:
        if option.is_dir():
            return option
    return require(options[0], f"{name} image folder", root, name)


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
    return group_benchmark(
        "ukbench", "ukbench", found, labels, [True] * n, [False] * n, Problems(folder)
    )


def load_holidays(root: str | Path) -> RetrievalBenchmark:
    """Load INRIA Holidays (``NNNNNN.jpg``, group = number // 100, query = first of each group).

    Images are searched in ``<root>/test/holidays/jpg``, ``<root>/holidays/jpg`` and
    ``<root>/jpg`` (a subset such as holidays805 works too). All images form the database; each
    query's own image is junk (removed from its ranking, as the official script does). A group
    with a single image has no positive: it stays in the database but is not a query.
    """
    folder = _find_image_dir(Path(root), "holidays", ("jpg",))
    found = sorted(p for p in folder.glob("*.jpg") if p.stem.isdigit() and len(p.stem) == 6)
    if not found:
        raise FileNotFoundError(
            f"no NNNNNN.jpg images in {folder}. "
            f"Download them with: {download_command('holidays', root)}"
        )
    labels = [str(int(p.stem) // 100) for p in found]
    sizes = Counter(labels)
    first = [i == 0 or labels[i] != labels[i - 1] for i in range(len(found))]
    is_query = [f and sizes[label] > 1 for f, label in zip(first, labels, strict=True)]
    single = [p.name for p, label in zip(found, labels, strict=True) if sizes[label] == 1]
    if single:
        log.info("holidays: %d one-image group(s) are database-only: %s", len(single), single[:5])
    return group_benchmark(
        "holidays", "holidays", found, labels, is_query, [False] * len(found), Problems(folder)
    )
