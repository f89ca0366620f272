"""The fast-path suite: extraction, mining, training and search, each a ratio measured in one run.

    python bench/suite.py                     # everything (2 CPU cores: about 15 minutes)
    python bench/suite.py --quick             # fewer images, search at 100k only (about 5 minutes)
    python bench/suite.py --compile --int8    # + compiled and int8 rows (CPU; about 20 minutes)
    python bench/suite.py --only extract mining --device cuda

Every section runs a reference and our fast path side by side on the same files and network:

  extraction  ResNet50-GeM, database images of 1024 px at three scales (1, 1/sqrt2, 1/2): the
              full path (JPEG files -> descriptors) one image at a time in fp32 (the cirtorch way
              of computing) against ours (size buckets, `auto` precision, channels_last, folded
              BatchNorm, loading threads), each beside the bare forward of its network on tensors
              already in memory in the same settings (the limit of that setting). With --int8
              also our int8 path, its calibration timed on its own (a fixed cost per extraction).
  mining      one epoch (queries + pool extracted at 362 px, hard negatives selected), reference
              settings against ours; the share of the epoch spent outside the bare forward.
  training    forward + backward + Adam step of 5-tuple batches at 362 px: fp32, contiguous, one
              image at a time (cirtorch) against ours (one batched forward, channels_last, the
              `auto` precision through Lightning's precision plugin); the losses of the first
              step of both are compared (same weights, same tuples).
  search      exact FAISS top-100 against a dense score matrix + full sort (cirtorch), queries per
              second and peak memory at 100k and 1M descriptors (bench_search.py's workers).

Images are smooth random JPEGs (content does not change the arithmetic); weights are random
(`--weights imagenet` needs the torchvision file). Scaled down from real runs in image count only.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search  # noqa: E402
from bench_extract import write_images  # noqa: E402

from retrieval.data.transforms import prepare_image  # noqa: E402
from retrieval.extraction.extract import (  # noqa: E402
    ImageListDataset,
    calibration_batches,
    extract_descriptors,
)
from retrieval.extraction.inference import PRECISIONS, inference_copy, resolve_precision  # noqa: E402
from retrieval.lightning.module import RetrievalModule  # noqa: E402
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule, TupleSource  # noqa: E402
from retrieval.models.net import RetrievalNet, build_net  # noqa: E402
from retrieval.pipelines.report import markdown_table  # noqa: E402

SCALES = (1.0, 2**-0.5, 0.5)
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["extract", "mining", "train", "search"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--precision", default="auto", help="of our path: auto|fp32|bf16|fp16")
    parser.add_argument("--compile", action="store_true", help="torch.compile our extraction")
    parser.add_argument(
        "--int8", action="store_true", help="also our int8 path (CPU): extraction and mining"
    )
    parser.add_argument("--profile", action="store_true", help="where our forward's time goes")
    parser.add_argument("--extract-images", type=int, default=12)
    parser.add_argument("--extract-size", type=int, default=1024)
    parser.add_argument("--mining-queries", type=int, default=24)
    parser.add_argument("--mining-pool", type=int, default=120)
    parser.add_argument("--train-size", type=int, default=362)
    parser.add_argument("--train-tuples", type=int, default=10)
    parser.add_argument("--batch", type=int, help="our extraction batch (default: CPU 1, GPU 32)")
    parser.add_argument("--repeats", type=int, default=2, help="each figure: the best of these")
    parser.add_argument("--workers", type=int, default=2, help="image loading threads")
    parser.add_argument("--search-sizes", type=int, nargs="+", default=[100_000, 1_001_001])
    parser.add_argument("--search-dim", type=int, default=2048)
    args = parser.parse_args()
    if args.quick:
        args.extract_images, args.mining_pool, args.train_tuples = 6, 60, 5
        args.search_sizes = [100_000]
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = torch.device(args.device)
    args.precision = resolve_precision(args.precision, args.device)
    if args.int8 and args.device.type != "cpu":
        raise SystemExit("--int8 is a CPU path; leave it out on GPUs")
    # On CPU a batch of large images runs slower than one at a time (caches); GPUs need batches.
    args.batch = args.batch or (1 if args.device.type == "cpu" else 32)
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> tuple[float, Any]:
    """(seconds, result): the fastest of `repeats` calls, the device synchronised around each.

    The first call also warms up (oneDNN primitives per shape, cuDNN plans, file cache); the
    best of a few is the figure least disturbed by a noisy machine.
    """
    best, result = float("inf"), None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


# ----------------------------------------------------------------------------------------------
# settings: the reference (cirtorch's way) and ours
# ----------------------------------------------------------------------------------------------


def reference_settings(args: argparse.Namespace) -> dict[str, Any]:
    """One image at a time, fp32, contiguous, unfolded; one loading thread (cirtorch's loader)."""
    return dict(batch_size=1, precision="fp32", channels_last=False, fold_bn=False, num_workers=1)


def fast_settings(
    args: argparse.Namespace, compile: bool = False, precision: str | None = None
) -> dict[str, Any]:
    return dict(
        batch_size=args.batch,
        precision=precision or args.precision,
        channels_last=True,
        fold_bn=True,
        num_workers=args.workers,
        compile=compile,
    )


def bare_forward(
    net: RetrievalNet,
    images: Sequence[torch.Tensor],
    settings: dict[str, Any],
    scales: Sequence[float],
    device: torch.device,
    repeats: int = 1,
) -> float:
    """Seconds of the network alone on prepared tensors in memory, batched as `settings` say.

    `net` is used as it is when it is already an inference copy (the int8 one, calibrated).
    """
    fast = net
    if not hasattr(net, "inference_settings"):
        fast = inference_copy(
            net,
            device,
            settings["channels_last"],
            fold_bn=settings["fold_bn"],
            compile=settings.get("compile", False),
        )
    dtype = PRECISIONS[settings["precision"]]
    fmt = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    groups: dict[tuple, list[torch.Tensor]] = {}
    for img in images:
        groups.setdefault(tuple(img.shape), []).append(img)
    batches = []
    for same in groups.values():
        for i in range(0, len(same), settings["batch_size"]):
            batch = torch.stack(same[i : i + settings["batch_size"]]).to(device)
            for s in scales:
                x = batch if s == 1 else F.interpolate(batch, scale_factor=s, mode="bilinear")
                batches.append(x.contiguous(memory_format=fmt))

    def run() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype, enabled=dtype != torch.float32),
        ):
            for x in batches:
                fast(x)

    run()  # warm-up: oneDNN primitives, cuDNN plans, compilation
    return timed(run, device, repeats)[0]


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def extraction(args: argparse.Namespace, net: RetrievalNet, folder: Path) -> dict[str, dict]:
    """Database extraction at 1024 px, three scales: full path and bare forward, both ways."""
    (folder / "extract").mkdir()
    paths = write_images(folder / "extract", args.extract_images, args.extract_size)
    mean, std = net.meta["mean"], net.meta["std"]
    images = [prepare_image(p, args.extract_size, mean, std) for p in paths]
    rows, descriptors = {}, {}
    runs = [
        ("extraction: reference (1 image, fp32)", reference_settings(args)),
        (f"extraction: ours ({_describe(args)})", fast_settings(args)),
    ]
    if args.compile:
        runs.append((f"extraction: ours ({_describe(args)}, compiled)", fast_settings(args, True)))
    if args.int8:
        runs.append(
            (f"extraction: ours ({_describe(args, 'int8')})", fast_settings(args, False, "int8"))
        )
    for name, settings in runs:
        runner, extra = net, {}
        if settings["precision"] == "int8":
            runner, extra = calibrated_int8(net, settings, paths, args.extract_size, SCALES)
        seconds, descriptors[name] = timed(
            lambda settings=settings, runner=runner: extract_descriptors(
                runner,
                paths,
                args.extract_size,
                scales=SCALES,
                device=args.device,
                progress=False,
                **settings,
            ),
            args.device,
            args.repeats,
        )
        bare = bare_forward(runner, images, settings, SCALES, args.device, args.repeats)
        rows[name] = _throughput_row(len(paths), seconds, bare)
        rows[name].update(extra)
    _add_speedups(rows)
    if args.profile:
        print(forward_profile(net, images[0], fast_settings(args), args.device), "\n")
    reference = descriptors[runs[0][0]]
    for name, _ in runs[1:]:
        rows[name]["min cosine to reference"] = float((reference * descriptors[name]).sum(1).min())
    return rows


def calibrated_int8(
    net: RetrievalNet,
    settings: dict[str, Any],
    paths: Sequence[str],
    max_side: int,
    scales: Sequence[float],
) -> tuple[torch.nn.Module, dict[str, float]]:
    """The int8 copy extraction of `paths` would make, and its calibration time.

    Calibration is a fixed cost per extraction (a database: once), so it is timed on its own and
    the timed runs get the calibrated copy.
    """
    start = time.perf_counter()
    batches = calibration_batches(net, ImageListDataset(paths, max_side), scales)
    runner = inference_copy(
        net, "cpu", settings["channels_last"], settings["fold_bn"], calibration=lambda: batches
    )
    return runner, {"calibration (s, once)": time.perf_counter() - start}


def forward_profile(
    net: RetrievalNet, image: torch.Tensor, settings: dict[str, Any], device: torch.device
) -> str:
    """The operators that take our forward's time (torch.profiler), for one image at 3 scales."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        bare_forward(net, [image], {**settings, "batch_size": 1}, SCALES, device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=12)


def mining_source(args: argparse.Namespace, folder: Path) -> TupleSource:
    """An SfM-like split of random JPEGs: 4 images per 3D model, one query-positive pair each."""
    n = args.mining_queries * 4 + args.mining_pool
    (folder / "mining").mkdir()
    paths = write_images(folder / "mining", n, args.train_size, seed=1)
    clusters = np.arange(n) // 4
    qidxs = np.arange(0, args.mining_queries * 4, 4)
    return TupleSource(paths, clusters, qidxs, qidxs + 1)


def mining(
    args: argparse.Namespace, net: RetrievalNet, source: TupleSource
) -> tuple[dict[str, dict], Any]:
    """One mining epoch with reference and fast extraction settings.

    int8 is timed with a network calibrated beforehand on the epoch's images (the calibration
    a mining epoch runs first, a fixed cost reported on its own).
    """
    rows, tuples, ids = {}, None, None
    mean, std = net.meta["mean"], net.meta["std"]
    runs = [
        ("mining: reference (1 image, fp32)", reference_settings(args)),
        (f"mining: ours ({_describe(args)})", fast_settings(args)),
    ]
    if args.int8:
        runs.append(
            (f"mining: ours ({_describe(args, 'int8')})", fast_settings(args, False, "int8"))
        )
    for name, settings in runs:
        config = MiningConfig(
            qsize=args.mining_queries,
            poolsize=args.mining_pool,
            nnum=5,
            image_size=args.train_size,
            mining_batch_size=settings["batch_size"],
            num_workers=settings["num_workers"],
            precision=settings["precision"],
            channels_last=settings["channels_last"],
            fold_bn=settings["fold_bn"],
            compile=settings.get("compile", False),
        )
        datamodule = TupleDataModule(source, config)
        runner, extra = net, {}
        if settings["precision"] == "int8":  # ids: the images every epoch-0 run extracts
            paths = [source.paths[i] for i in ids]
            runner, extra = calibrated_int8(net, settings, paths, args.train_size, (1.0,))
        mine = lambda dm=datamodule, runner=runner: dm.mine(runner, epoch=0)  # noqa: E731
        seconds, tuples = timed(mine, args.device, args.repeats)
        ids = np.unique(np.concatenate([tuples.query, tuples.positive, _pool_ids(datamodule)]))
        images = [prepare_image(source.paths[i], args.train_size, mean, std) for i in ids]
        bare = bare_forward(runner, images, settings, (1.0,), args.device, args.repeats)
        rows[name] = _throughput_row(len(ids), seconds, bare)
        rows[name]["outside the forward (%)"] = 100 * (1 - bare / seconds)
        rows[name].update(extra)
    _add_speedups(rows)
    return rows, tuples


def _pool_ids(datamodule: TupleDataModule) -> np.ndarray:
    """The pool drawn for epoch 0 (the same draw as `mine`)."""
    from retrieval.data.tuples import epoch_generator, sample_epoch

    source, cfg = datamodule.sources["train"], datamodule.config
    _, pool = sample_epoch(
        len(source.qidxs), cfg.qsize, len(source.paths), cfg.poolsize, epoch_generator(cfg.seed, 0)
    )
    return pool.numpy()


def training(
    args: argparse.Namespace, net: RetrievalNet, source: TupleSource, tuples: Any
) -> dict[str, dict]:
    """Tuples per second of forward + backward + step, cirtorch's way against ours."""
    from pytorch_lightning.plugins.precision import MixedPrecision, Precision

    mean, std = net.meta["mean"], net.meta["std"]
    count = min(args.train_tuples, len(tuples))
    batch = [
        (
            [
                prepare_image(source.paths[i], args.train_size, mean, std).to(args.device)
                for i in tuples.image_indices(t)
            ],
            None,
        )
        for t in range(count)
    ]
    loss = {"name": "contrastive", "margin": 0.85}
    optim = {"name": "adam", "lr": 1e-6}
    precision = LIGHTNING_PRECISION[args.precision]
    plugin = Precision() if precision == "32-true" else MixedPrecision(precision, args.device.type)

    def reference_step(module: RetrievalModule, step: list) -> float:
        """cirtorch: each image through the network alone, the loss of each tuple backwarded."""
        total = 0.0
        for images, _ in step:
            d = torch.cat([module.net(img[None]) for img in images])
            tuple_loss = module.loss_fn(d[:1], d[1:2], d[None, 2:])
            tuple_loss.backward()
            total += tuple_loss.item()
        return total

    def fast_step(module: RetrievalModule, step: list) -> float:
        with plugin.forward_context():
            step_loss = module.tuple_loss(step)
        step_loss.backward()
        return step_loss.item()

    rows = {}
    for name, channels_last, step_fn in [
        ("training: reference (1 image, fp32)", False, reference_step),
        (f"training: ours (batched, {precision}, channels_last)", True, fast_step),
    ]:
        model = copy.deepcopy(net).to(args.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        module = RetrievalModule(model, loss, optim).train()
        initial = copy.deepcopy(module.state_dict())
        train_steps(module, step_fn, batch)  # warm-up, then back to the same weights
        module.load_state_dict(initial)
        seconds, losses = timed(lambda m=module, f=step_fn: train_steps(m, f, batch), args.device)
        rows[name] = {"tuples/s": count / seconds, "first-step loss": losses[0]}
    reference = next(iter(rows.values()))
    for row in rows.values():
        row["speed-up vs reference"] = row["tuples/s"] / reference["tuples/s"]
        row["loss rel. diff"] = abs(row["first-step loss"] / reference["first-step loss"] - 1)
    return rows


def train_steps(module: RetrievalModule, step_fn: Callable, batch: list) -> list[float]:
    """Optimiser steps of 5 tuples each (a fresh Adam); the loss of each step."""
    optimizer = module.configure_optimizers()["optimizer"]
    losses = []
    for start in range(0, len(batch), 5):
        optimizer.zero_grad()
        losses.append(step_fn(module, batch[start : start + 5]))
        optimizer.step()
    return losses


def search(args: argparse.Namespace) -> dict[str, dict]:
    """Dense sort (cirtorch) against FAISS flat top-100, in bench_search.py's subprocesses."""
    options = argparse.Namespace(
        queries=70, near=4, hard=1, seed=0, nprobe=16, ks=[100], dense_max_gb=None
    )
    rows = {}
    for n in args.search_sizes:
        for row in bench_search.run_size(n, args.search_dim, options, ["dense", "flat"]):
            if "failed" in row or "BLAS" in row["method"]:
                continue
            seconds = row["search_s"] + row["eval_s"]
            rows[f"search {n:,} x {args.search_dim}: {row['method']}"] = {
                "queries/s": options.queries / seconds,
                "peak RSS (GB)": bench_search.peak(row) / 1024,
                "speed-up vs reference": row.get("speedup", float("nan")),
            }
    return rows


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def _describe(args: argparse.Namespace, precision: str | None = None) -> str:
    return f"batch {args.batch}, {precision or args.precision}, channels_last, BN folded"


def _throughput_row(images: int, seconds: float, bare_seconds: float) -> dict[str, float]:
    return {
        "images/s": images / seconds,
        "bare forward images/s": images / bare_seconds,
        "full path / bare (%)": 100 * bare_seconds / seconds,
    }


def _add_speedups(rows: dict[str, dict]) -> None:
    reference = next(iter(rows.values()))["images/s"]
    for row in rows.values():
        row["speed-up vs reference"] = row["images/s"] / reference


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    net = build_net(args.backbone, "gem", weights=args.weights).eval()
    device_name = torch.cuda.get_device_name() if args.device.type == "cuda" else "CPU"
    print(
        f"{args.backbone}-GeM on {device_name} ({torch.get_num_threads()} CPU threads), "
        f"our precision: {args.precision}; torch {torch.__version__}",
        flush=True,
    )
    sections: dict[str, dict[str, dict]] = {}

    def report(name: str, rows: dict[str, dict]) -> None:
        sections[name] = rows
        print(markdown_table(rows), "\n", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "extract" in args.only:
            report("extraction (images/s)", extraction(args, net, folder))
        if {"mining", "train"} & set(args.only):
            source = mining_source(args, folder)
            rows, tuples = mining(args, net, source)
            if "mining" in args.only:
                report("mining epoch (images/s)", rows)
            if "train" in args.only:
                report("training (tuples/s)", training(args, net, source, tuples))
    if "search" in args.only:
        report("search (queries/s)", search(args))
    print("Summary: ours against the reference, measured side by side above\n")
    print(markdown_table(summary(sections)))


def summary(sections: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """One row per section: reference and our throughput, the speed-up, ours against bare."""
    rows = {}
    for name, section in sections.items():
        if name.startswith("search"):  # one reference/ours pair per database size
            pairs = [
                (r, o)
                for (r, o) in zip(list(section)[::2], list(section)[1::2], strict=False)
                if "dense" in r
            ]
        else:
            reference, *variants = section
            pairs = [(reference, ours) for ours in variants]
        for reference, ours in pairs:
            unit = next(k for k in section[ours] if k.endswith("/s"))
            label = reference.split(":")[0]
            if not name.startswith("search"):
                label = f"{name}, ours ({ours.split('(', 1)[1]}"
            rows[label] = {
                "reference": section[reference][unit],
                "ours": section[ours][unit],
                "speed-up": section[ours]["speed-up vs reference"],
            }
            if "full path / bare (%)" in section[ours]:
                rows[label]["ours full path / bare (%)"] = section[ours]["full path / bare (%)"]
    return rows


if __name__ == "__main__":
    main()
