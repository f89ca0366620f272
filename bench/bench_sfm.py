"""The SfM pipeline's cost per stage (python -m retrieval.data sfm): images per second for each
stage at two image sizes, and how matching grows with the number of photos N and neighbours k.

    python bench/bench_sfm.py                      # the 34 real photos of ../shared/data/sfm_scenes
    python bench/bench_sfm.py --images DIR --sides 640 1024 --ns 12 24 34 --ks 3 6 12
    python bench/bench_sfm.py --quality            # + COLMAP vs the synthetic world's geometry

One run, one machine, every figure side by side. Stages: images (decode, orient, shrink, write),
descriptors (the project's network), pairs (FAISS top-k), features (SIFT), matches, verification
(RANSAC), mapping (incremental). Matching is rerun on copies of one feature database, so the N and
k sweeps time matching and verification only. ``--quality`` runs the whole pipeline on rendered
views of every landmark kind and prints positive-pair precision and recall against the world's
shared 3D points and model purity against its landmarks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from retrieval.data import formats
from retrieval.data.sfm import SfmOptions, build_sfm_dataset, colmap
from retrieval.data.sfm.pairs import exhaustive_pairs, retrieval_pairs
from retrieval.pipelines.sfm import network_describer

SCENES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sfm_scenes"
PER_PAIR = ("matches", "verification")


def _options(args: argparse.Namespace, side: int, **extra) -> SfmOptions:
    return SfmOptions(
        name="bench",
        max_side=side,
        max_features=args.features,
        pairs_k=args.k,
        exhaustive_max=0,
        num_threads=args.threads,
        **extra,
    )


def stage_table(args: argparse.Namespace, work: Path) -> None:
    """Every stage at each image size: seconds and images (or pairs) per second."""
    describe, name = network_describer(None, image_size=args.image_size, device="cpu")
    print(f"\n## Stages (k={args.k}, {args.features} SIFT features, {args.threads} threads)\n")
    print("| max side | stage | seconds | images/s | pairs/s |\n|---|---|---|---|---|")
    for side in args.sides:
        out = work / f"stages{side}"
        report = build_sfm_dataset(args.images, out, describe, _options(args, side), name)
        n, pairs = report["images"]["usable"], report["pairs"]["matched"]
        for stage, seconds in report["seconds"].items():
            per_pair = f"{pairs / seconds:.1f}" if stage in PER_PAIR and seconds else ""
            rate = f"{n / seconds:.2f}" if seconds else "-"
            print(f"| {side} | {stage} | {seconds:.1f} | {rate} | {per_pair} |")
        total = sum(report["seconds"].values())
        print(f"| {side} | total | {total:.1f} | {n / total:.2f} | |")
        print(
            f"\n{side} px: {n} images, {report['registered']} registered in "
            f"{sum(m['kept'] for m in report['models'])} models, {pairs} pairs matched, "
            f"{report['pairs']['verified']} verified\n"
        )


def growth_table(args: argparse.Namespace, work: Path) -> None:
    """Matching and verification time against N (k fixed) and k (N fixed), exhaustive beside."""
    side = args.sides[0]
    folder = formats.sfm_dir(work / f"stages{side}", "bench") / "colmap"
    names = json.loads((folder / "images.json").read_text())["cids"]
    names = [f"{cid}.jpg" for cid in names]
    descriptors = np.load(folder / "descriptors.npy")
    options = _options(args, side)
    print(f"\n## Matching growth ({side} px, same features)\n")
    print("| N | k | pairs | match s | verify s | pairs/s |\n|---|---|---|---|---|---|")
    runs = [(n, args.k) for n in args.ns] + [(max(args.ns), k) for k in args.ks if k != args.k]
    runs += [(max(args.ns), 0)]  # 0: exhaustive
    for n, k in runs:
        n = min(n, len(names))
        pairs = exhaustive_pairs(n) if k == 0 else retrieval_pairs(descriptors[:n], k)
        db = work / f"growth_{n}_{k}.db"
        shutil.copyfile(folder / "database.db", db)
        colmap.clear_verification(db)
        _forget_matches(db)
        start = time.perf_counter()
        colmap.match_pairs(db, pairs, names, options)
        matched = time.perf_counter()
        colmap.verify_pairs(db, pairs, names, options)
        done = time.perf_counter()
        label = "all" if k == 0 else str(k)
        rate = len(pairs) / (done - start)
        print(
            f"| {n} | {label} | {len(pairs)} | {matched - start:.1f} | {done - matched:.1f} "
            f"| {rate:.1f} |"
        )
        db.unlink()


def _forget_matches(db: Path) -> None:
    with colmap.quiet_colmap() as pycolmap:
        database = pycolmap.Database.open(str(db))
        database.clear_matches()
        database.close()


def quality_table(args: argparse.Namespace, work: Path) -> None:
    """COLMAP on the synthetic world (every landmark kind) against the world's geometry."""
    from retrieval.data.synthetic import SyntheticConfig, ensure_world

    config = SyntheticConfig(
        seed=3, n_train_landmarks=4, n_val_landmarks=0, n_test_landmarks=1,
        views_per_landmark=10, queries_per_landmark=1, max_side=640, workers=args.threads,
    )  # fmt: skip
    world = ensure_world(work / "world", config)
    truth = formats.load_sfm_db(world, "synthetic-sfm")["train"]
    photos = work / "world_photos"
    photos.mkdir(exist_ok=True)
    for cid, path in zip(truth.cids, truth.image_paths, strict=True):
        os.link(path, photos / f"{cid}.jpg")
    options = SfmOptions(
        name="world", max_side=640, max_features=2048, exhaustive_max=1000, min_model_size=2,
        init_min_inliers=50, init_min_tri_angle=8.0, abs_pose_min_inliers=15, val_fraction=0.0,
        num_threads=args.threads,
    )  # fmt: skip
    unused = lambda paths: np.ones((len(paths), 1), np.float32)  # noqa: E731 (exhaustive pairs)
    report = build_sfm_dataset(photos, work / "world_out", unused, options)
    geometry = json.loads(
        (formats.sfm_dir(world, "synthetic-sfm") / "synthetic-sfm-geometry.json").read_text()
    )
    pairs, seen = geometry["train"]["pairs"], np.array(geometry["train"]["points_seen"])
    columns = [pairs[k] for k in ("query", "db", "shared", "scale")]
    shared = {(q, d): s for q, d, s, _ in zip(*columns, strict=True)}
    rule = [(q, d) for q, d, s, c in zip(*columns, strict=True) if s / seen[q] >= 0.2 and c <= 1.5]
    truth_pos = set(rule)
    folder = formats.sfm_dir(work / "world_out", "world")
    with (folder / "world-images.csv").open() as handle:
        source = {r["cid"]: r["source"] for r in csv.DictReader(handle)}
    mine = formats.load_sfm_db(work / "world_out", "world")["train"]
    row = {cid: i for i, cid in enumerate(truth.cids)}
    to_world = np.array([row[Path(source[c]).stem] for c in mine.cids])
    sidecar = formats.read_positives_sidecar(folder / "world-positives.npz", len(mine))
    candidates = enumerate(sidecar.to_lists())
    found = {(int(to_world[q]), int(to_world[p])) for q, c in candidates for p, _ in c}
    precision = sum(shared.get(p, 0) > 0 for p in found) / max(len(found), 1)
    recall = len(found & truth_pos) / max(len(truth_pos), 1)
    landmark = truth.cluster[to_world]
    purity = sum(np.bincount(landmark[mine.cluster == m]).max() for m in np.unique(mine.cluster))
    print("\n## Quality on the synthetic world (seed 3: tower, corner, box, box; 10 views each)\n")
    print(
        f"registered {report['registered']} of {len(truth)}; positives precision "
        f"{precision:.2f} ({len(found)} pairs), recall {recall:.2f} of {len(truth_pos)}; "
        f"purity {purity / len(landmark):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=SCENES)
    parser.add_argument("--sides", type=int, nargs="+", default=[640, 1024])
    parser.add_argument("--ns", type=int, nargs="+", default=[12, 23, 34])
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 6, 12])
    parser.add_argument("--k", type=int, default=6, help="neighbours of the stage table")
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=256, help="descriptor image size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", action="store_true")
    args = parser.parse_args()
    print(f"# bench_sfm: {args.images}, {os.cpu_count()} CPUs visible, {args.threads} threads")
    with tempfile.TemporaryDirectory(prefix="bench_sfm_") as tmp:
        work = Path(tmp)
        stage_table(args, work)
        growth_table(args, work)
        if args.quality:
            quality_table(args, work)


if __name__ == "__main__":
    main()
