"""Generic folders described by ``groundtruth.csv``: benchmarks and labelled training images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retrieval.data.formats.checks import Problems, check_files, parse_box
from retrieval.data.formats.images import sorted_labels
from retrieval.data.formats.text import csv_text, read_csv, write_text
from retrieval.types import Box, RetrievalBenchmark

GENERIC_COLUMNS = ("path", "object_id", "role", "x1", "y1", "x2", "y2", "junk")

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"", "0", "false", "no", "n", "f"}


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
    write_text(path, csv_text(header, body))


def _generic_rows(root: Path, csv_name: str) -> tuple[Path, list[dict[str, str]]]:
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"ground truth CSV not found: {csv_path}. A generic dataset is a folder with a "
            f"'{csv_name}' listing 'path,object_id' (paths relative to the folder)."
        )
    return csv_path, read_csv(csv_path, ("path", "object_id"))


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
    problems = Problems(csv_path)
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
                box = parse_box([float(c) for c in cells], f"{where} box", problems)
            except ValueError:
                problems.add(f"{where}: box cells x1,y1,x2,y2 must all be numbers: {cells}")
        paths.append(root / row["path"])
        labels.append(row["object_id"])
        roles.append(role)
        junk.append(flag in _TRUE)
        boxes.append(box)
    if check_images:
        check_files(paths, problems, "image")
    if not has_role:
        is_query = [not j for j in junk]  # a junk image is database-only
        return group_benchmark(root.name, "generic", paths, labels, is_query, junk, problems, boxes)
    problems.raise_if_any()
    return _role_benchmark(root.name, paths, labels, roles, junk, boxes, problems)


def group_benchmark(
    name: str,
    protocol: str,
    images: list[Path],
    labels: list[str],
    is_query: list[bool],
    junk: list[bool],
    problems: Problems,
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


def _role_benchmark(
    name: str,
    paths: list[Path],
    labels: list[str],
    roles: list[str],
    junk: list[bool],
    boxes: list[Box | None],
    problems: Problems,
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


def read_labelled_images(
    root: str | Path, csv_name: str = "groundtruth.csv", check_images: bool = True
) -> tuple[list[Path], np.ndarray]:
    """Image paths and contiguous class labels (0..K-1, in sorted object_id order) of a generic
    folder, for training from labels; every row is used whatever its role."""
    root = Path(root)
    csv_path, rows = _generic_rows(root, csv_name)
    problems = Problems(csv_path)
    for r, row in enumerate(rows):
        if not row["path"] or not row["object_id"]:
            problems.add(f"row {r + 2}: 'path' and 'object_id' must not be empty")
    paths = [root / row["path"] for row in rows]
    if check_images:
        check_files(paths, problems, "image")
    problems.raise_if_any()
    classes = {label: k for k, label in enumerate(sorted_labels({r["object_id"] for r in rows}))}
    labels = np.array([classes[row["object_id"]] for row in rows], dtype=np.int64)
    return paths, labels
