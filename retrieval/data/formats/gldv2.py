"""Google Landmarks v2: training CSVs, the retrieval solution and the retrieval benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.data.formats.checks import Problems, check_files, download_command, require
from retrieval.data.formats.text import csv_text, read_csv, write_text
from retrieval.types import RetrievalBenchmark

GLDV2_USAGES = ("Public", "Private", "Ignored")


def gldv2_dir(root: str | Path) -> Path:
    """Folder of Google Landmarks v2: ``<root>/gldv2`` (CSV files and train/index/test images)."""
    return Path(root) / "gldv2"


def gldv2_image_path(images_root: str | Path, image_id: str) -> Path:
    """GLDv2 image path ``<images_root>/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``."""
    return Path(images_root) / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _parse_int(text: str, where: str, problems: Problems) -> int:
    try:
        return int(text)
    except ValueError:
        problems.add(f"{where}: expected an integer, found {text!r}")
        return -1


# --------------------------------------------------------------------------------------------------
# Training images
# --------------------------------------------------------------------------------------------------


def write_gldv2_train_csv(path: str | Path, ids: list[str], landmark_ids: list[int]) -> None:
    """Write a GLDv2 ``train.csv`` (``id,url,landmark_id``; the url column is left empty)."""
    if len(ids) != len(landmark_ids):
        raise ValueError(
            f"write_gldv2_train_csv: {len(ids)} ids but {len(landmark_ids)} landmark_ids; "
            "pass one landmark id per image id"
        )
    rows = [(i, "", int(lm)) for i, lm in zip(ids, landmark_ids, strict=True)]
    write_text(path, csv_text(("id", "url", "landmark_id"), rows))


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
    problems = Problems(path)
    ids: list[str] = []
    landmarks: list[int] = []
    empty: list[int] = []
    if "images" in header:
        rows = read_csv(path, ("landmark_id", "images"))
        for r, row in enumerate(rows):
            lm = _parse_int(row["landmark_id"], f"row {r + 2} landmark_id", problems)
            if not row["images"].split():
                empty.append(lm)
            for image_id in row["images"].split():
                ids.append(image_id)
                landmarks.append(lm)
    else:
        rows = read_csv(path, ("id", "landmark_id"))
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
        check_files(paths, problems, "training image")
        problems.raise_if_any()
    return GldTrainSet(ids, np.array(landmarks, dtype=np.int64), paths, empty)


# --------------------------------------------------------------------------------------------------
# Retrieval benchmark
# --------------------------------------------------------------------------------------------------


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
    problems = Problems(path)
    queries = []
    for r, row in enumerate(read_csv(path, ("id", "images", "Usage"))):
        if row["Usage"] not in GLDV2_USAGES:
            problems.add(
                f"row {r + 2} (id {row['id']}): Usage {row['Usage']!r} not in {GLDV2_USAGES}"
            )
        images = [] if row["images"] in ("", "None") else row["images"].split()
        queries.append(GldQuery(row["id"], images, row["Usage"]))
    problems.raise_if_any()
    return queries


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
    index_csv = require(folder / "index.csv", "GLDv2 index list", root, "gldv2")
    solution_csv = require(
        folder / "retrieval_solution_v2.1.csv", "GLDv2 retrieval solution", root, "gldv2"
    )
    index_ids = [row["id"] for row in read_csv(index_csv, ("id",))]
    position = {image_id: i for i, image_id in enumerate(index_ids)}
    problems = Problems(solution_csv)
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
        check_files(images, problems, "index image")
        check_files(queries, problems, "test image")
    problems.raise_if_any()
    return RetrievalBenchmark(
        f"gldv2-{usage}", images, queries, [None] * len(queries), gnd, "gldv2"
    )
