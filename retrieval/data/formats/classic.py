"""The classic benchmarks: Oxford5k/Paris6k (original ``ok/junk`` gnd), UKBench and Holidays."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from retrieval.data.formats.checks import Problems, check_files, download_command, require
from retrieval.data.formats.generic import group_benchmark
from retrieval.data.formats.revisitop import (
    gnd_entry,
    gnd_path,
    jpg_path,
    read_gnd_pickle,
    test_dir,
)
from retrieval.data.formats.safe_pickle import write_pickle
from retrieval.types import RetrievalBenchmark

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


def load_oxford(root: str | Path, name: str, check_images: bool = True) -> RetrievalBenchmark:
    """Load ``oxford5k``/``paris6k`` with the original ``ok``/``junk`` gnd (cirtorch layout)."""
    path = require(gnd_path(root, name), f"{name} ground truth", root, name)
    folder = require(test_dir(root, name) / "jpg", f"{name} image folder", root, name)
    problems = Problems(path)
    imlist, qimlist, gnd, boxes = read_gnd_pickle(path, ("ok", "junk"), ("ok",), problems)
    images = [jpg_path(folder, x) for x in imlist]
    queries = [jpg_path(folder, x) for x in qimlist]
    if check_images:
        check_files(images, problems, "database image")
        check_files(queries, problems, "query image")
    problems.raise_if_any()
    return RetrievalBenchmark(name, images, queries, boxes, gnd, "oxford")


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
