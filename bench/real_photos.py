"""Retrieval of real photos by one network: Holidays-805, UKBench-1000, COIL-100 test objects.

    python bench/real_photos.py [--checkpoint RUN/model.pt] [--whitening none|pca|lw]
        [--whitening-dim N] [--whitening-shrinkage S] [--data ../shared/data] [--cache DIR]

Without --checkpoint: the off-the-shelf network of conf/ (ImageNet EfficientNet-Lite0-GeM).
Each set at the README's settings: descriptors at scales 1, 1/sqrt(2), 1/2, longest side
1024 (Holidays' 400 px and COIL's 128 px photos are never upscaled) and 320 for UKBench.
  Holidays-805   official protocol (group = number // 100, first image queries), mAP
  UKBench-1000   every image queries the rest, mAP and the N-S score (0..4)
  COIL-100 test  objects 52-100 (the validation split of `data=labels data.train_classes=50`,
                 which trains on objects 2-51), every image queries the rest, mAP
--whitening learns PCA-whitening (pca) or Lw (lw, pairs = views of one object) on COIL-100's
training objects 2-51 only, never on an evaluated image. Prints a Markdown table and the time.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from retrieval.checkpoint import load_checkpoint
from retrieval.data.formats.images import sorted_labels
from retrieval.eval.benchmarks import (
    ExtractionSettings,
    extract_benchmark,
    held_out_groups,
    leave_one_out_benchmark,
    load_benchmark,
    score_ranks,
)
from retrieval.index import search
from retrieval.models.net import RetrievalNet, build_net
from retrieval.models.whitening import apply_whitening, learn_whitening, pca_whitening
from retrieval.pipelines.report import markdown_table
from retrieval.types import RetrievalBenchmark

SCALES = (1.0, 2**-0.5, 0.5)
COIL_TRAIN_LAST = 51  # objects 2..51 train (data.train_classes=50), 52..100 are reported
HOLIDAYS_TRAIN = 150  # data=labels data.train_classes=150 trains on the first 150 scenes
UKBENCH_TRAIN = 125  # ... =125 on the first 125 UKBench objects; "held-out" columns: the rest


def coil_split(data: Path) -> tuple[RetrievalBenchmark, RetrievalBenchmark]:
    """COIL-100's training objects (whitening only) and its test objects (reported)."""
    full = load_benchmark("generic", "", data / "coil100_15deg")
    labels = np.array([int(label) for label in full.labels])
    parts = []
    for name, keep in (("coil-train", labels <= COIL_TRAIN_LAST), ("coil-test", labels > 51)):
        rows = np.flatnonzero(keep)
        paths = [full.images[i] for i in rows]
        parts.append(leave_one_out_benchmark(name, paths, labels[rows]))
    return parts[0], parts[1]


def object_pairs(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of images of one object: the matching pairs Lw learns from."""
    by_object: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_object.setdefault(label, []).append(i)
    pairs = [p for rows in by_object.values() for p in itertools.combinations(rows, 2)]
    q, p = zip(*pairs, strict=True)
    return np.array(q), np.array(p)


def whitening(args: argparse.Namespace, net: RetrievalNet, train: RetrievalBenchmark, cache: Path):
    """The (database, queries) postprocess learned on COIL's training objects, or None."""
    if args.whitening == "none":
        return None
    settings = ExtractionSettings(image_size=1024, scales=SCALES, progress=False)
    X, _ = extract_benchmark(net, train, settings, cache)
    if args.whitening == "pca":
        mean, P = pca_whitening(X)
        P = P[: args.whitening_dim]
    else:
        q, p = object_pairs(list(train.labels))
        dim, shrinkage = args.whitening_dim, args.whitening_shrinkage
        mean, P = learn_whitening(X, q, p, dim=dim, shrinkage=shrinkage)
    return lambda db, qs: (apply_whitening(db, mean, P), apply_whitening(qs, mean, P))


def load_network(checkpoint: Path | None) -> RetrievalNet:
    """The fine-tuned network of a checkpoint, or conf/'s off-the-shelf one, in eval mode."""
    if checkpoint:
        return load_checkpoint(checkpoint).eval()
    return build_net("efficientnet_lite0", "gem", {"p": 3.0, "learn_p": True}, "imagenet").eval()


def held_out(benchmark: RetrievalBenchmark, n_train: int):
    """Its groups after the first `n_train` (in sorted object-id order): the split that
    `data=labels data.train_classes=n_train` never trains on."""
    first = set(sorted_labels(set(benchmark.labels))[:n_train])
    return held_out_groups(benchmark, lambda label: label not in first)


def score(benchmark, database, queries, post) -> dict[str, float]:
    if post is not None:
        database, queries = post(database, queries)
    _, ranks = search(database, queries)
    return score_ranks(benchmark, ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--whitening", choices=("none", "pca", "lw"), default="none")
    parser.add_argument("--whitening-dim", type=int, default=None)
    parser.add_argument("--whitening-shrinkage", type=float, default=0.0)
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared/data")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/retrieval/descriptors")
    args = parser.parse_args()
    start = time.perf_counter()
    net = load_network(args.checkpoint)
    coil_train, coil_test = coil_split(args.data)
    post = whitening(args, net, coil_train, args.cache)
    sets = (  # name, benchmark, longest side, groups trained on by its data=labels recipe
        (
            "Holidays-805",
            load_benchmark("holidays", args.data / "holidays805"),
            1024,
            HOLIDAYS_TRAIN,
        ),
        (
            "UKBench-1000",
            load_benchmark("generic", "", args.data / "ukbench_sample"),
            320,
            UKBENCH_TRAIN,
        ),
        ("COIL-100 objects 52-100", coil_test, 1024, 0),
    )
    label = f"{args.checkpoint or 'off-the-shelf'}, whitening {args.whitening}"
    row: dict[str, float] = {}
    for name, benchmark, size, n_train in sets:
        settings = ExtractionSettings(image_size=size, scales=SCALES, progress=True)
        database, queries = extract_benchmark(net, benchmark, settings, args.cache)
        parts = [(name, benchmark, database, queries)]
        if n_train:
            part, db_rows, query_rows = held_out(benchmark, n_train)
            parts.append((f"{name} held-out", part, database[db_rows], queries[query_rows]))
        for column, part, db, qs in parts:
            figures = score(part, db, qs, post)
            row[f"{column} mAP"] = figures["mAP"]
            if "N-S" in figures:
                row[f"{column} N-S"] = figures["N-S"]
    print(markdown_table({label: row}, digits=3))
    print(f"wall time: {time.perf_counter() - start:.0f} s (descriptors cached in {args.cache})")


if __name__ == "__main__":
    main()
