"""Extraction throughput: files on disk -> descriptors, ours against cirtorch's way of computing.

    python bench/bench_extract.py [--backbone resnet50] [--images 48] [--size 1024] [--device auto]
                                  [--precision auto|fp32|bf16|fp16]

Side by side in one run, on the same JPEG files (written to a temporary folder):
  reference   one image at a time, fp32, contiguous (as cirtorch's extract_vectors)
  ours        extraction.extract: size buckets, channels_last, in --precision (auto: what the
              framework measures as the faster within round-off on this machine, printed)
and, for each setting, the bare forward of the network on tensors already in memory (its limit).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retrieval.extraction.extract import extract_descriptors
from retrieval.extraction.inference import PRECISIONS, auto_decision, resolve_precision
from retrieval.models.net import build_net
from retrieval.pipelines.report import markdown_table


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """Smooth random JPEGs, landscape and portrait, longest side `size`."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        w, h = (size, size * 3 // 4) if i % 4 else (size * 3 // 4, size)
        low = rng.integers(0, 255, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
        paths.append(folder / f"{i:05d}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_forward(net, device, shapes, batch: int, dtype, channels_last: bool) -> float:
    """Seconds of the network alone on in-memory tensors of the given image shapes."""
    net = net.to(device).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    groups: dict[tuple, int] = {}
    for shape in shapes:
        groups[shape] = groups.get(shape, 0) + 1
    tensors = {
        s: torch.rand(min(batch, n), 3, *s, device=device).to(memory_format=fmt)
        for s, n in groups.items()
    }
    with torch.inference_mode(), torch.autocast(device.type, dtype, enabled=dtype != torch.float32):
        for x in tensors.values():  # warm-up
            net(x)
        sync(device)
        start = time.perf_counter()
        for s, n in groups.items():
            for i in range(0, n, batch):
                net(tensors[s][: min(batch, n - i)])
        sync(device)
    net.to(memory_format=torch.contiguous_format)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="ours: auto|fp32|bf16|fp16")
    args = parser.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    net = build_net(args.backbone, "gem", weights="none").eval()
    if args.precision == "auto":
        decision = auto_decision(device, net)
        print(f"precision auto: {decision.precision} ({decision.reason})")
    fast_precision = resolve_precision(args.precision, device, net)
    fast_dtype = PRECISIONS[fast_precision]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, args.size)
        shapes = [tuple(reversed(Image.open(p).size)) for p in paths]
        runs = {
            "reference (1 image, fp32)": dict(
                batch_size=1, precision="fp32", channels_last=False, num_workers=args.workers
            ),
            f"ours (batch {args.batch}, {fast_precision}, channels_last)": dict(
                batch_size=args.batch,
                precision=fast_precision,
                channels_last=True,
                num_workers=args.workers,
            ),
        }
        limits = {
            "reference (1 image, fp32)": (1, torch.float32, False),
            f"ours (batch {args.batch}, {fast_precision}, channels_last)": (
                args.batch,
                fast_dtype,
                True,
            ),
        }
        extract_descriptors(net, paths[:4], max_side=args.size, device=device, progress=False)
        rows, descriptors = {}, {}
        for name, options in runs.items():
            sync(device)
            start = time.perf_counter()
            descriptors[name] = extract_descriptors(
                net, paths, max_side=args.size, device=device, progress=False, **options
            )
            sync(device)
            seconds = time.perf_counter() - start
            bare = bare_forward(net, device, shapes, *limits[name])
            rows[name] = {
                "images/s": len(paths) / seconds,
                "bare forward images/s": len(paths) / bare,
                "full path / bare (%)": 100 * bare / seconds,
            }
        reference = next(iter(rows.values()))["images/s"]
        for row in rows.values():
            row["speed-up vs reference"] = row["images/s"] / reference
        a, b = descriptors.values()
        cosine = float((a * b).sum(1).min())
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"{args.backbone}-GeM, {args.images} images of {args.size} px, {name}, "
        f"{torch.get_num_threads()} CPU threads; min cosine ours vs reference {cosine:.5f}"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
