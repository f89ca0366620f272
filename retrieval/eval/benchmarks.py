"""Benchmarks end to end: load, extract (cached), search (FAISS), score with the exact protocol."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.data import formats
from retrieval.eval import metrics
from retrieval.extraction.cache import cached_extract, extraction_key
from retrieval.extraction.extract import extract_descriptors
from retrieval.extraction.inference import resolve_precision
from retrieval.index import search
from retrieval.types import RetrievalBenchmark

log = logging.getLogger(__name__)

BenchmarkLoader = Callable[[Path], RetrievalBenchmark]


def _synthetic_ukbench(root: Path) -> RetrievalBenchmark:
    folder = formats.test_dir(root, "synthetic-ukbench")
    return dataclasses.replace(formats.load_ukbench(folder), name="synthetic-ukbench")


# name -> loader of the benchmark from a data root (the folder holding test/<name>); 1:1 with the
# values of evaluate.py's `datasets` and train.py's `data.benchmark`. Add a benchmark here.
BENCHMARKS: dict[str, BenchmarkLoader] = {
    "synthetic-rox": partial(formats.load_revisitop, name="synthetic-rox"),
    "roxford5k": partial(formats.load_revisitop, name="roxford5k"),
    "rparis6k": partial(formats.load_revisitop, name="rparis6k"),
    "roxford5k+r1m": partial(formats.load_revisitop, name="roxford5k", distractors=True),
    "rparis6k+r1m": partial(formats.load_revisitop, name="rparis6k", distractors=True),
    "oxford5k": partial(formats.load_oxford, name="oxford5k"),
    "paris6k": partial(formats.load_oxford, name="paris6k"),
    "ukbench": formats.load_ukbench,
    "synthetic-ukbench": _synthetic_ukbench,
    "holidays": formats.load_holidays,
    "gldv2-public": partial(formats.load_gldv2, usage="public"),
    "gldv2-private": partial(formats.load_gldv2, usage="private"),
    "generic": formats.load_generic,  # its root is the folder holding groundtruth.csv
}


def load_benchmark(
    name: str, root: str | Path, generic_root: str | Path | None = None
) -> RetrievalBenchmark:
    """Load a benchmark by name from a data root (the folder holding test/<name>)."""
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    if name == "generic":
        if generic_root is None:
            raise ValueError("datasets=[generic] needs generic_root=FOLDER (with groundtruth.csv)")
        root = generic_root
    return BENCHMARKS[name](Path(root))


def leave_one_out_benchmark(name: str, paths: list[Path], labels: np.ndarray) -> RetrievalBenchmark:
    """Every image queries all the others; positives share its label, itself is junk."""
    labels = np.asarray(labels)
    gnd = []
    for i, label in enumerate(labels):
        same = np.flatnonzero(labels == label)
        gnd.append({"ok": same[same != i], "junk": np.array([i])})
    return RetrievalBenchmark(
        name,
        list(paths),
        list(paths),
        [None] * len(paths),
        gnd,
        "generic",
        labels=[str(v) for v in labels],
        query_db_index=np.arange(len(paths)),
    )


def held_out_groups(
    benchmark: RetrievalBenchmark, keep: Callable[[str], bool]
) -> tuple[RetrievalBenchmark, np.ndarray, np.ndarray]:
    """The part of a labelled benchmark whose groups pass `keep`: (benchmark, database rows,
    query rows), rows into the full one's descriptors. For figures on the groups a model did not
    train on (data=labels trains on the first data.train_classes of them)."""
    if benchmark.labels is None:
        raise ValueError(f"benchmark {benchmark.name!r} has no labels to split by")
    query_labels = benchmark.query_labels or benchmark.labels
    db_rows = np.flatnonzero([keep(label) for label in benchmark.labels])
    query_rows = np.flatnonzero([keep(label) for label in query_labels])
    new_row = np.full(len(benchmark.images), -1, dtype=np.int64)
    new_row[db_rows] = np.arange(db_rows.size)

    def kept(rows: np.ndarray) -> np.ndarray:
        moved = _moved(rows, new_row)
        return moved[moved >= 0]

    gnd = [{k: kept(v) for k, v in benchmark.gnd[q].items()} for q in query_rows]
    index = benchmark.query_db_index
    part = dataclasses.replace(
        benchmark,
        name=f"{benchmark.name}-held-out",
        images=[benchmark.images[i] for i in db_rows],
        queries=[benchmark.queries[q] for q in query_rows],
        query_boxes=[benchmark.query_boxes[q] for q in query_rows],
        gnd=gnd,
        labels=[benchmark.labels[i] for i in db_rows],
        query_labels=[query_labels[q] for q in query_rows] if benchmark.query_labels else None,
        query_db_index=None if index is None else _moved(np.asarray(index)[query_rows], new_row),
    )
    return part, db_rows, query_rows


def _moved(rows: np.ndarray, new_row: np.ndarray) -> np.ndarray:
    """Old database rows -> new ones (-1: dropped, or no row to begin with)."""
    rows = np.asarray(rows, dtype=np.int64)
    return np.where(rows >= 0, new_row[np.maximum(rows, 0)], -1)


def score_ranks(benchmark: RetrievalBenchmark, ranks: np.ndarray) -> dict[str, float]:
    """The benchmark's figures (percent, except the N-S score) for Q x K ranks."""
    n_db = len(benchmark.images)
    if benchmark.protocol == "revisited":
        return metrics.evaluate_revisited(ranks, benchmark.gnd, n_db=n_db)
    if benchmark.protocol == "gldv2":  # the challenge's metric on the top 100
        predictions = {q: row[:100].tolist() for q, row in enumerate(ranks)}
        solution = {q: entry["ok"].tolist() for q, entry in enumerate(benchmark.gnd)}
        return {"mAP@100": metrics.gldv2_map_at_k(predictions, solution, k=100)}
    mean_ap, _, mean_pk, _ = metrics.compute_map(ranks, benchmark.gnd, (1, 5, 10), n_db=n_db)
    results = {"mAP": 100.0 * mean_ap}
    results.update({f"mP@{k}": 100.0 * float(p) for k, p in zip((1, 5, 10), mean_pk, strict=True)})
    if _every_image_queries_itself(benchmark) and benchmark.labels is not None and n_db >= 4:
        # UKBench's N-S score: same-object images among the top 4, the query itself included.
        results["N-S"] = metrics.ukbench_ns_score(ranks, np.asarray(benchmark.labels))
    return results


def _every_image_queries_itself(benchmark: RetrievalBenchmark) -> bool:
    index = benchmark.query_db_index
    return index is not None and np.array_equal(index, np.arange(len(benchmark.images)))


@dataclass
class ExtractionSettings:
    """How a benchmark's images are turned into descriptors."""

    image_size: int = 1024
    scales: tuple[float, ...] = (1.0,)
    batch_size: int = 16
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (per device, see resolve_precision)
    device: str | torch.device = "cpu"
    num_workers: int = 0
    progress: bool = True
    channels_last: bool = False
    fold_bn: bool = True
    compile: bool = False

    def key_options(self, net: torch.nn.Module | None = None) -> dict[str, Any]:
        """The options that change the descriptors (part of their cache key); `auto` precision
        is resolved for `net`'s trunk (measured, see resolve_precision)."""
        return {
            "max_side": self.image_size,
            "scales": tuple(self.scales),
            "precision": resolve_precision(self.precision, self.device, net),
        }

    def speed_options(self) -> dict[str, Any]:
        """The options that only change how fast they are computed."""
        return {
            "batch_size": self.batch_size,
            "device": self.device,
            "num_workers": self.num_workers,
            "progress": self.progress,
            "channels_last": self.channels_last,
            "fold_bn": self.fold_bn,
            "compile": self.compile,
        }


def extract_benchmark(
    net: torch.nn.Module,
    benchmark: RetrievalBenchmark,
    settings: ExtractionSettings,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Database and query descriptors (queries cropped to their boxes), cached on disk."""

    def run(paths: list[Path], boxes: list | None, what: str) -> np.ndarray:
        options = settings.key_options(net)
        key = extraction_key(net, f"{benchmark.name}/{what}", paths, boxes, **options)
        return cached_extract(
            cache_dir,
            key,
            lambda: extract_descriptors(
                net,
                paths,
                boxes=boxes,
                desc=f"{benchmark.name} {what}",
                **options,
                **settings.speed_options(),
            ),
        )

    database = run(list(benchmark.images), None, "database")
    rows = _database_rows_of_queries(benchmark)
    queries = np.empty((len(benchmark.queries), database.shape[1]), dtype=database.dtype)
    queries[rows >= 0] = database[rows[rows >= 0]]  # the same image, already extracted
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        boxes = [benchmark.query_boxes[q] for q in missing]
        paths = [benchmark.queries[q] for q in missing]
        cropped = any(box is not None for box in boxes)
        queries[missing] = run(paths, boxes if cropped else None, "queries")
    return database, queries


def _database_rows_of_queries(benchmark: RetrievalBenchmark) -> np.ndarray:
    """Per query, the database row holding its descriptor (itself without a box), or -1."""
    rows = np.full(len(benchmark.queries), -1, dtype=np.int64)
    if benchmark.query_db_index is not None:
        uncropped = np.array([box is None for box in benchmark.query_boxes], dtype=bool)
        index = np.asarray(benchmark.query_db_index, dtype=np.int64)
        rows[uncropped] = index[uncropped]
    return rows


def evaluate_net(
    net: torch.nn.Module,
    benchmark: RetrievalBenchmark,
    settings: ExtractionSettings,
    cache_dir: str | Path | None = None,
    topk: int | None = None,
    index_type: str = "flat",
    postprocess: Any = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Extract, search and score one benchmark: (figures, ranks Q x K)."""
    database, queries = extract_benchmark(net, benchmark, settings, cache_dir)
    if postprocess is not None:
        database, queries = postprocess(database, queries)
    _, ranks = search(database, queries, k=topk, index_type=index_type)
    return score_ranks(benchmark, ranks), ranks
