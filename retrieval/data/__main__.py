"""Data command line: ``python -m retrieval.data synthetic ...``, ``... download ...``,
``... clean ...`` (drop labelled images that disagree with their class) or ``... sfm ...``
(a training set from your own photos)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from retrieval.data.synthetic import SyntheticConfig, default_root, ensure_world, read_world_info


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retrieval.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    syn = sub.add_parser("synthetic", help="generate (or reuse) the synthetic SfM world")
    defaults = SyntheticConfig()
    syn.add_argument(
        "--root",
        default=None,
        help="world folder (default: $RETRIEVAL_DATA/synthetic/<hash> or "
        "~/.cache/retrieval/synthetic/<hash>)",
    )
    syn.add_argument("--seed", type=int, default=defaults.seed)
    syn.add_argument("--train-landmarks", type=int, default=defaults.n_train_landmarks)
    syn.add_argument("--val-landmarks", type=int, default=defaults.n_val_landmarks)
    syn.add_argument("--test-landmarks", type=int, default=defaults.n_test_landmarks)
    syn.add_argument(
        "--views", type=int, default=defaults.views_per_landmark, help="database views per landmark"
    )
    syn.add_argument(
        "--queries",
        type=int,
        default=defaults.queries_per_landmark,
        help="queries per test landmark",
    )
    syn.add_argument(
        "--max-side", type=int, default=defaults.max_side, help="longest image side in pixels"
    )
    syn.add_argument(
        "--points", type=int, default=defaults.points_per_landmark, help="3D points per landmark"
    )
    syn.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    syn.add_argument("--force", action="store_true", help="regenerate even if cached")
    sub.add_parser(
        "download",
        add_help=False,
        help="download a real dataset (see: python -m retrieval.data download -h)",
    )
    sub.add_parser(
        "clean",
        add_help=False,
        help="write a cleaned labelled-image CSV (see: python -m retrieval.data clean -h)",
    )
    sub.add_parser(
        "sfm",
        add_help=False,
        help="photos -> COLMAP 3D models -> an SfM training set (see: python -m retrieval.data "
        "sfm -h)",
    )
    return parser


def _config(args: argparse.Namespace) -> SyntheticConfig:
    return SyntheticConfig(
        seed=args.seed,
        n_train_landmarks=args.train_landmarks,
        n_val_landmarks=args.val_landmarks,
        n_test_landmarks=args.test_landmarks,
        views_per_landmark=args.views,
        queries_per_landmark=args.queries,
        max_side=args.max_side,
        points_per_landmark=args.points,
        workers=args.workers,
    )


def _print_stats(root: str, stats: dict, seconds: float, reused: bool) -> None:
    for name, split in stats["sfm"].items():
        print(
            f"{name:>5}: {split['images']} images of {split['landmarks']} landmarks, "
            f"{split['pairs']} query-positive pairs, {split['matching_pairs']} matching pairs"
        )
    test = stats["test"]
    print(
        f" test: {test['images']} database images of {test['landmarks']} landmarks, "
        f"{test['queries']} queries; per query easy {test['mean_easy']:.1f}, "
        f"hard {test['mean_hard']:.1f}, junk {test['mean_junk']:.1f}"
    )
    print(f"ukbench: {test['ukbench_images']} images")
    print(f"world: {root} ({'reused from cache' if reused else 'generated'} in {seconds:.1f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the data command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "download":
        from retrieval.data.download import download_main

        return int(download_main(argv[1:]) or 0)
    if argv and argv[0] == "clean":
        # An entry point hands the job to the pipelines layer (data/ never imports it).
        return int(importlib.import_module("retrieval.pipelines.clean").main(argv[1:]))
    if argv and argv[0] == "sfm":  # pairs by retrieval need the network: the pipelines layer
        return int(importlib.import_module("retrieval.pipelines.sfm").main(argv[1:]))
    args = _parser().parse_args(argv)
    config = _config(args)
    start = time.perf_counter()
    target = args.root if args.root is not None else default_root(config)
    before = read_world_info(target)
    root = ensure_world(target, config, force=args.force)
    info = read_world_info(root) or {}
    reused = not args.force and before is not None and before.get("hash") == config.key()
    _print_stats(str(root), info.get("stats", {}), time.perf_counter() - start, reused)
    return 0


if __name__ == "__main__":
    sys.exit(main())
