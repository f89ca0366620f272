"""The SfM job: describe the photos with the project's network (pairs by retrieval), then COLMAP
and the training-set writer of :mod:`retrieval.data.sfm`; ``python -m retrieval.data sfm ...``
hands over to :func:`main`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.data.sfm import (
    Describe,
    SfmError,
    SfmOptions,
    build_sfm_dataset,
    require_pycolmap,
)

log = logging.getLogger(__name__)


def network_describer(
    checkpoint: str | None,
    backbone: str = "efficientnet_lite0",
    weights: str = "imagenet",
    image_size: int = 512,
    batch_size: int = 16,
    device: str = "cpu",
) -> tuple[Describe, str]:
    """A ``describe`` callable with the network (a checkpoint, else the off-the-shelf one) and
    its name (a rerun with another network describes again)."""
    from retrieval.checkpoint import load_checkpoint
    from retrieval.extraction.extract import extract_distributed
    from retrieval.models.net import build_net

    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint {path} not found (a model.pt from train.py)")
        name = f"checkpoint:{path.resolve()}:{path.stat().st_mtime_ns}@{image_size}"
    else:
        name = f"{backbone}-gem-{weights}@{image_size}"

    def describe(paths: Sequence[Path]) -> np.ndarray:
        # built here, not above: a resumed run whose descriptors are on disk never loads it
        if checkpoint:
            net = load_checkpoint(checkpoint)
        else:
            net = build_net(backbone, "gem", weights=weights)
        return extract_distributed(
            net,
            list(paths),
            max_side=image_size,
            batch_size=batch_size,
            device=device,
            precision="auto",  # train.py's fast path: bf16 where exact enough, NHWC
            channels_last=True,
            desc="sfm: describe",
        )

    return describe, name


def _parser() -> argparse.ArgumentParser:
    d = SfmOptions()
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.data sfm",
        description="Photos -> COLMAP 3D models -> a retrieval-SfM-120k training set "
        "ROOT/train/NAME (tuples, positives sidecar, whitening pairs); rerun to resume.",
    )
    add = parser.add_argument
    add("--images", required=True, help="folder of photos (searched recursively)")
    add("--out", required=True, help="data root ROOT: writes ROOT/train/NAME")
    add("--name", default=d.name, help="training set name (data.name)")
    add("--checkpoint", default=None, help="model.pt that proposes pairs (default: ImageNet GeM)")
    add("--backbone", default="efficientnet_lite0")
    add("--weights", default="imagenet")
    add("--image-size", type=int, default=512, help="longest side for the global descriptors")
    add("--batch-size", type=int, default=16)
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--pairs-k", type=int, default=d.pairs_k, help="retrieval neighbours matched per image")
    add("--exhaustive-max", type=int, default=d.exhaustive_max, help="all pairs up to N images")
    add("--max-side", type=int, default=d.max_side, help="longest side COLMAP and training see")
    add("--max-features", type=int, default=d.max_features, help="SIFT features per image")
    add("--min-model-size", type=int, default=d.min_model_size, help="smallest model kept")
    add("--min-inliers", type=int, default=d.min_inliers, help="a verified pair: inliers")
    add("--init-min-inliers", type=int, default=d.init_min_inliers, help="mapper: first pair")
    add("--init-min-tri-angle", type=float, default=d.init_min_tri_angle, help="mapper: degrees")
    add("--abs-pose-min-inliers", type=int, default=d.abs_pose_min_inliers, help="registration")
    add("--min-overlap", type=float, default=d.min_overlap, help="positives: shared/query points")
    add("--max-scale", type=float, default=d.max_scale, help="positives: largest scale change")
    add("--min-shared", type=int, default=d.min_shared, help="positives: fewest shared points")
    add("--val-fraction", type=float, default=d.val_fraction, help="models held out for val")
    add("--threads", type=int, default=d.num_threads, help="COLMAP threads (-1: all cores)")
    add("--gpu", action="store_true", help="SIFT on the GPU (needs a CUDA build of pycolmap)")
    add("--seed", type=int, default=d.seed)
    return parser


def _options(args: argparse.Namespace) -> SfmOptions:
    return SfmOptions(
        name=args.name,
        max_side=args.max_side,
        max_features=args.max_features,
        pairs_k=args.pairs_k,
        exhaustive_max=args.exhaustive_max,
        min_model_size=args.min_model_size,
        min_inliers=args.min_inliers,
        init_min_inliers=args.init_min_inliers,
        init_min_tri_angle=args.init_min_tri_angle,
        abs_pose_min_inliers=args.abs_pose_min_inliers,
        min_overlap=args.min_overlap,
        max_scale=args.max_scale,
        min_shared=args.min_shared,
        val_fraction=args.val_fraction,
        num_threads=args.threads,
        gpu=args.gpu,
        seed=args.seed,
    )


def summary_lines(report: dict[str, Any], root: str) -> list[str]:
    """The report in a few lines for the terminal."""
    images, splits = report["images"], report["splits"]
    kept = [m for m in report["models"] if m["kept"]]
    lines = [
        f"images: {images['usable']} usable of {images['found']} "
        f"({len(report['skipped'])} skipped), {report['registered']} registered",
        f"models: {len(kept)} kept of {len(report['models'])} (sizes "
        f"{', '.join(str(m['registered']) for m in kept)})",
        f"pairs: {report['pairs']['matched']} matched, {report['pairs']['verified']} verified",
    ]
    for name, split in splits.items():
        lines.append(
            f"{name}: {split['images']} images, {split['models']} models, "
            f"{split['pairs']} query-positive pairs, {split['whitening_pairs']} whitening pairs"
        )
    seconds = ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items())
    lines.append(
        f"seconds: {seconds}"
        + (" (resumed: " + ", ".join(report["resumed"]) + ")" if report["resumed"] else "")
    )
    name = report["options"]["name"]
    train_models = splits["train"]["models"]
    lines.append(
        f"train: python train.py data=sfm_photos data.root={root} data.name={name}"
        + (f" data.nnum={train_models - 1}" if train_models - 1 < 5 else "")
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m retrieval.data sfm``: photos to a training set; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = _options(args)
        require_pycolmap()  # before the network is built: the pip command, at once
        describe, describer = network_describer(
            args.checkpoint,
            args.backbone,
            args.weights,
            args.image_size,
            args.batch_size,
            args.device,
        )
        report = build_sfm_dataset(args.images, args.out, describe, options, describer)
    except (SfmError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in summary_lines(report, args.out):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
