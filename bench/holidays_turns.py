"""What sideways photos cost on Holidays-805: mAP as stored, and at each photo's best quarter turn.

    python bench/holidays_turns.py [--checkpoint RUN/model.pt] [--data ../shared/data]

INRIA Holidays keeps some photos as shot, turned a quarter (the official set is not corrected).
A global CNN descriptor is not invariant to that. This scores the official protocol twice, at
bench/real_photos.py's settings: as the photos are, and with every database photo also described
turned 90 degrees left and right, each query taking the best of the three similarities (an upper
bound on what invariance to quarter turns could give). The turned copies go to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from real_photos import SCALES, load_network

from retrieval.eval.benchmarks import (
    ExtractionSettings,
    extract_benchmark,
    load_benchmark,
    score_ranks,
)
from retrieval.extraction.extract import extract_descriptors


def turned_copies(images: list[Path], folder: Path, angle: int) -> list[Path]:
    """Each image turned by `angle` degrees (counter-clockwise), saved in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in images:
        copy = folder / path.name
        with Image.open(path) as img:
            img.rotate(angle, expand=True).save(copy, quality=95)
        copies.append(copy)
    return copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared/data")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/retrieval/descriptors")
    args = parser.parse_args()
    start = time.perf_counter()
    net = load_network(args.checkpoint)
    holidays = load_benchmark("holidays", args.data / "holidays805")
    settings = ExtractionSettings(image_size=1024, scales=SCALES, progress=True)
    database, queries = extract_benchmark(net, holidays, settings, args.cache)
    upright = queries @ database.T
    best = upright.copy()
    with tempfile.TemporaryDirectory() as tmp:
        for angle in (90, 270):
            copies = turned_copies(holidays.images, Path(tmp) / str(angle), angle)
            turned = extract_descriptors(
                net, copies, max_side=1024, scales=SCALES, desc=f"turned {angle}"
            )
            best = np.maximum(best, queries @ turned.T)
    for name, similarity in (("as stored", upright), ("best quarter turn", best)):
        ranks = np.argsort(-similarity, axis=1, kind="stable")
        print(f"Holidays-805 mAP, {name}: {score_ranks(holidays, ranks)['mAP']:.2f}")
    print(f"wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
