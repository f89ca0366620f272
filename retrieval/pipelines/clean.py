"""The cleaning job: describe labelled images with a network and keep those that agree with their
class; ``python -m retrieval.data clean ...`` hands over to :func:`main`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import torch

from retrieval.checkpoint import load_checkpoint
from retrieval.data.classes import (
    FORMATS,
    MISSING,
    LabelledImages,
    class_consistent,
    load_labelled_images,
    write_labelled_csv,
)
from retrieval.extraction.extract import extract_distributed
from retrieval.models.net import build_net

log = logging.getLogger(__name__)


def clean_labelled_images(
    net: torch.nn.Module,
    images: LabelledImages,
    k: int = 5,
    min_images: int = 2,
    image_size: int = 256,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> LabelledImages:
    """The images that agree with their class (:func:`class_consistent` on ``net``'s
    descriptors), classes left with fewer than ``min_images`` removed."""
    start = time.perf_counter()
    descriptors = extract_distributed(
        net,
        images.paths,
        max_side=image_size,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        desc="cleaning",
    )
    keep = class_consistent(descriptors, images.labels, k)
    kept = images.subset(keep)
    big = kept.counts()[kept.labels] >= int(min_images)
    kept = kept.subset(big)
    log.info(
        "cleaning (k=%d): kept %d of %d images and %d of %d classes in %.1f s",
        k,
        len(kept),
        len(images),
        len(kept.classes),
        len(images.classes),
        time.perf_counter() - start,
    )
    return kept


def _clean_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.data clean",
        description="Drop labelled images whose descriptor disagrees with their class (not among "
        "the k nearest neighbours of any other image of the class); write a cleaned CSV.",
    )
    parser.add_argument("--format", choices=FORMATS, default="gldv2")
    parser.add_argument(
        "--root", default=None, help="dataset root (default: the synthetic world's labels)"
    )
    parser.add_argument("--csv", default=None, help="CSV relative to root (gldv2, generic)")
    parser.add_argument("--images", default=None, help="gldv2 image folder (default: train/)")
    parser.add_argument("--missing", choices=MISSING, default="error")
    parser.add_argument("--out", required=True, help="the cleaned CSV to write")
    parser.add_argument("--checkpoint", default=None, help="model.pt to describe images with")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--k", type=int, default=5, help="nearest neighbours that must agree")
    parser.add_argument("--min-images", type=int, default=2, help="smallest class kept")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m retrieval.data clean``: clean a labelled image set into a new CSV."""
    args = _clean_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root, csv = args.root, args.csv
    if root is None:  # the synthetic world: a fresh machine has something to clean
        from retrieval.data.synthetic import LABELS_NAME, ensure_world

        root, csv = ensure_world(), csv or f"train/{LABELS_NAME}/train.csv"
    images = load_labelled_images(args.format, root, csv, args.images, args.missing)
    if args.checkpoint:
        net = load_checkpoint(args.checkpoint)
    else:
        net = build_net(args.backbone, "gem", weights=args.weights)
    kept = clean_labelled_images(
        net, images, args.k, args.min_images, args.image_size, args.batch_size, args.device
    )
    out = write_labelled_csv(kept, args.out)
    print(
        f"kept {len(kept)} of {len(images)} images, {len(kept.classes)} of {len(images.classes)} "
        f"classes: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
