"""The fast-path suite: extraction, mining, training, the epoch and search, each a ratio in one run.

    python bench/suite.py                     # everything (2 CPU cores: about 20 minutes)
    python bench/suite.py --quick             # fewer images and repeats, search at 100k only
    python bench/suite.py --compile --int8    # + compiled and int8 rows (CPU)
    python bench/suite.py --only extract mining train --device cuda

It prints how long it took: --quick is about 5 minutes on a quiet 2-core CPU (estimated from its
parts; a busy machine takes much longer). Every section runs a reference and our fast path side
by side on the same files and network; on a CPU "ours" runs in fp32 and in bf16, and the row
marked [auto] is the precision `auto` measured as the faster within round-off here (its decision
and why are printed first; GPU: auto's choice only):

  extraction  ResNet50-GeM, database images of 1024 px at three scales (1, 1/sqrt2, 1/2): the
              full path (JPEG files -> descriptors) one image at a time in fp32 (the cirtorch way
              of computing) against ours (size buckets, channels_last, folded BatchNorm, loading
              threads, fp32 or bf16), each beside the bare forward of its network on tensors
              already in memory in the same settings (the limit of that setting). With --int8
              also our int8 path, its calibration timed on its own (a fixed cost per extraction).
  mining      one epoch (queries + pool extracted at 362 px, hard negatives selected), reference
              settings against ours; the share of the epoch spent outside the bare forward.
  training    forward + backward + Adam step of 5-tuple batches at 362 px: fp32, contiguous, one
              image at a time (cirtorch) against ours (one batched forward, channels_last, the
              precision through Lightning's precision plugin); the losses of the first step of
              both are compared (same weights, same tuples).
  epoch       the cirtorch recipe's epoch as a user waits for it: the mining above plus training
              on all of the epoch's tuples (the training rows' time per tuple).
  search      exact FAISS top-100 against a dense score matrix + full sort (cirtorch), queries per
              second and peak memory at 100k and 1M descriptors (bench_search.py's workers).

Each figure is the fastest of --repeats timed calls after a warm-up call; the end of the report
warns when the repeats spread widely or the machine was loaded (ratios then do not hold), and the
summary sets each ratio against its goal (CPU: extraction and mining 2.5x, training and epoch
1.5x; GPU: 5x). Images are smooth random JPEGs (content does not change the arithmetic); weights
are random (`--weights imagenet` needs the torchvision file). Scaled down from real runs in image
count only.
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
from suite_report import ODDITIES, load_per_core, summary, table, timed, warnings_text  # noqa: E402

from retrieval.data.transforms import prepare_image  # noqa: E402
from retrieval.extraction.extract import (  # noqa: E402
    ImageListDataset,
    calibration_batches,
    extract_descriptors,
)
from retrieval.extraction.inference import (  # noqa: E402
    PRECISIONS,
    auto_decision,
    inference_copy,
    resolve_precision,
)
from retrieval.lightning.module import RetrievalModule  # noqa: E402
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule, TupleSource  # noqa: E402
from retrieval.models.net import RetrievalNet, build_net  # noqa: E402

SCALES = (1.0, 2**-0.5, 0.5)
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["extract", "mining", "train", "search"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--weights", default="none")
    parser.add_argument(
        "--precision",
        default="auto",
        help="ours: auto (CPU: fp32 and bf16, auto's measured choice marked; GPU: auto's choice) "
        "or one of fp32|bf16|fp16",
    )
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
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per figure (best)")
    parser.add_argument(
        "--bare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the bare forward on tensors in memory (the limit)",
    )
    parser.add_argument("--workers", type=int, default=2, help="image loading threads")
    parser.add_argument("--search-sizes", type=int, nargs="+", default=[100_000, 1_001_001])
    parser.add_argument("--search-dim", type=int, default=2048)
    args = parser.parse_args()
    if args.quick:
        args.extract_images, args.mining_queries, args.mining_pool = 4, 12, 48
        args.train_tuples, args.repeats, args.bare = 5, 2, False
        args.search_sizes = [100_000]
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = torch.device(args.device)
    if args.precision != "auto":
        resolve_precision(args.precision, args.device)  # validated before any work
    if args.int8 and args.device.type != "cpu":
        raise SystemExit("--int8 is a CPU path; leave it out on GPUs")
    # On CPU a batch of large images runs slower than one at a time (caches); GPUs need batches.
    args.batch = args.batch or (1 if args.device.type == "cpu" else 32)
    return args


def our_precisions(args: argparse.Namespace, net: RetrievalNet) -> None:
    """args.ours (our precisions) and args.auto (kind -> what auto chose), printed with why."""
    args.auto = {kind: auto_decision(args.device, net, kind) for kind in ("inference", "training")}
    for kind, decision in args.auto.items():
        print(f"auto precision for {kind}: {decision.precision} ({decision.reason})", flush=True)
    if args.precision != "auto":
        args.ours = [args.precision]
    elif args.device.type == "cpu":
        args.ours = ["fp32", "bf16"]
    else:
        args.ours = [args.auto["inference"].precision]


# ----------------------------------------------------------------------------------------------
# settings: the reference (cirtorch's way) and ours
# ----------------------------------------------------------------------------------------------


def reference_settings(args: argparse.Namespace) -> dict[str, Any]:
    """One image at a time, fp32, contiguous, unfolded; one loading thread (cirtorch's loader)."""
    return dict(batch_size=1, precision="fp32", channels_last=False, fold_bn=False, num_workers=1)


def fast_settings(
    args: argparse.Namespace, precision: str, compile: bool = False
) -> dict[str, Any]:
    return dict(
        batch_size=args.batch,
        precision=precision,
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
    label: str = "",
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

    return timed(run, device, repeats, label)[0]  # after a warm-up: oneDNN, cuDNN, compilation


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def ours_runs(args: argparse.Namespace, part: str, kind: str) -> list[tuple[str, dict]]:
    """(row name, settings): the reference, ours in each precision, compiled and int8 if asked."""
    runs = [(f"{part}: reference (1 image, fp32)", reference_settings(args))]
    for precision in args.ours:
        runs.append(
            (f"{part}: ours ({_describe(args, precision, kind)})", fast_settings(args, precision))
        )
    chosen = args.auto[kind].precision
    if args.compile and part == "extraction":
        name = f"{part}: ours ({_describe(args, chosen, kind)}, compiled)"
        runs.append((name, fast_settings(args, chosen, compile=True)))
    if args.int8:
        runs.append(
            (f"{part}: ours ({_describe(args, 'int8', kind)})", fast_settings(args, "int8"))
        )
    return runs


def extraction(args: argparse.Namespace, net: RetrievalNet, folder: Path) -> dict[str, dict]:
    """Database extraction at 1024 px, three scales: full path and bare forward, both ways."""
    (folder / "extract").mkdir()
    paths = write_images(folder / "extract", args.extract_images, args.extract_size)
    mean, std = net.meta["mean"], net.meta["std"]
    images = [prepare_image(p, args.extract_size, mean, std) for p in paths]
    rows, descriptors = {}, {}
    runs = ours_runs(args, "extraction", "inference")
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
            name,
        )
        bare = None
        if args.bare:
            bare = bare_forward(
                runner, images, settings, SCALES, args.device, args.repeats, f"{name}, bare"
            )
        rows[name] = _throughput_row(name, len(paths), seconds, bare)
        rows[name].update(extra)
    _add_speedups(rows)
    if args.profile:
        chosen = args.auto["inference"].precision
        print(forward_profile(net, images[0], fast_settings(args, chosen), args.device), "\n")
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
    """One mining epoch with reference and fast extraction settings; the reference's tuples.

    int8 is timed with a network calibrated beforehand on the epoch's images (the calibration
    a mining epoch runs first, a fixed cost reported on its own).
    """
    rows, reference, ids = {}, None, None
    mean, std = net.meta["mean"], net.meta["std"]
    for name, settings in ours_runs(args, "mining", "inference"):
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
        seconds, tuples = timed(mine, args.device, args.repeats, name)
        ids = np.unique(np.concatenate([tuples.query, tuples.positive, _pool_ids(datamodule)]))
        bare = None
        if args.bare:
            images = [prepare_image(source.paths[i], args.train_size, mean, std) for i in ids]
            label = f"{name}, bare"
            bare = bare_forward(runner, images, settings, (1.0,), args.device, args.repeats, label)
        rows[name] = _throughput_row(name, len(ids), seconds, bare)
        if bare is not None:
            rows[name]["outside the forward (%)"] = 100 * (1 - bare / seconds)
        if reference is None:
            reference = tuples
        else:  # the hard negatives ours mined against the reference's, as sets per query
            same = [
                set(a) == set(b) for a, b in zip(reference.negatives, tuples.negatives, strict=True)
            ]
            rows[name]["same negatives as reference (%)"] = 100 * float(np.mean(same))
        rows[name].update(extra)
    _add_speedups(rows)
    return rows, reference


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

    def reference_step(module: RetrievalModule, step: list) -> float:
        """cirtorch: each image through the network alone, the loss of each tuple backwarded."""
        total = 0.0
        for images, _ in step:
            d = torch.cat([module.net(img[None]) for img in images])
            tuple_loss = module.loss_fn(d[:1], d[1:2], d[None, 2:])
            tuple_loss.backward()
            total += tuple_loss.item()
        return total

    def fast_step(plugin: Any, module: RetrievalModule, step: list) -> float:
        with plugin.forward_context():
            step_loss = module.tuple_loss(step)
        step_loss.backward()
        return step_loss.item()

    runs = [("training: reference (1 image, fp32)", False, reference_step)]
    for precision in args.ours:
        lightning = LIGHTNING_PRECISION[precision]
        plugin = (
            Precision() if lightning == "32-true" else MixedPrecision(lightning, args.device.type)
        )
        mark = " [auto]" if precision == args.auto["training"].precision else ""
        name = f"training: ours (batched, {lightning}{mark}, channels_last)"
        runs.append((name, True, lambda m, step, plugin=plugin: fast_step(plugin, m, step)))
    rows = {}
    for name, channels_last, step_fn in runs:
        model = copy.deepcopy(net).to(args.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        module = RetrievalModule(model, loss, optim).train()
        initial = copy.deepcopy(module.state_dict())

        def from_initial(module=module, initial=initial, step_fn=step_fn) -> list[float]:
            module.load_state_dict(initial)  # every call trains the same weights on the same tuples
            return train_steps(module, step_fn, batch)

        seconds, losses = timed(from_initial, args.device, args.repeats, name)
        rows[name] = {"tuples/s": count / seconds, "first-step loss": losses[0]}
    reference = next(iter(rows.values()))
    for row in rows.values():
        row["speed-up vs reference"] = row["tuples/s"] / reference["tuples/s"]
        row["loss rel. diff"] = abs(row["first-step loss"] / reference["first-step loss"] - 1)
    return rows


def epoch(
    args: argparse.Namespace, mining_rows: dict[str, dict], training_rows: dict[str, dict]
) -> dict[str, dict]:
    """The cirtorch recipe's epoch: mining it plus training on all its tuples, both ways.

    From the rows measured above: the mining time of the epoch plus its tuples at the training
    rows' rate (the same images, prepared in memory, for both ways).
    """
    tuples = args.mining_queries
    rows = {}
    names = ["reference (1 image, fp32)"] + [
        f"ours ({p}{' [auto]' if p == args.auto['training'].precision else ''})" for p in args.ours
    ]
    pairs = zip(list(mining_rows)[: len(names)], list(training_rows)[: len(names)], strict=True)
    for name, (mined, trained) in zip(names, pairs, strict=True):
        seconds = mining_rows[mined]["seconds"] + tuples / training_rows[trained]["tuples/s"]
        rows[f"epoch of {tuples} tuples: {name}"] = {
            "tuples/s": tuples / seconds,
            "seconds": seconds,
        }
    reference = next(iter(rows.values()))["seconds"]
    for row in rows.values():
        row["speed-up vs reference"] = reference / row["seconds"]
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


def _describe(args: argparse.Namespace, precision: str, kind: str) -> str:
    mark = " [auto]" if precision == args.auto[kind].precision else ""
    return f"batch {args.batch}, {precision}{mark}, channels_last, BN folded"


def _throughput_row(
    name: str, images: int, seconds: float, bare_seconds: float | None
) -> dict[str, float]:
    row = {"images/s": images / seconds, "seconds": seconds}
    if bare_seconds is not None:
        row["bare forward images/s"] = images / bare_seconds
        row["full path / bare (%)"] = 100 * bare_seconds / seconds
        if bare_seconds > seconds:
            ODDITIES.append(
                f"{name}: the bare forward took longer than the whole path "
                f"({100 * bare_seconds / seconds:.0f}%), impossible on a quiet machine"
            )
    return row


def _add_speedups(rows: dict[str, dict]) -> None:
    reference = next(iter(rows.values()))["images/s"]
    for row in rows.values():
        row["speed-up vs reference"] = row["images/s"] / reference


def main() -> None:
    started, start_load = time.perf_counter(), load_per_core()
    args = parse_args()
    torch.manual_seed(0)
    net = build_net(args.backbone, "gem", weights=args.weights).eval()
    device_name = torch.cuda.get_device_name() if args.device.type == "cuda" else "CPU"
    print(
        f"{args.backbone}-GeM on {device_name} ({torch.get_num_threads()} CPU threads), "
        f"torch {torch.__version__}; load average {start_load:.2f} per core at the start",
        flush=True,
    )
    our_precisions(args, net)
    sections: dict[str, dict[str, dict]] = {}

    def report(name: str, rows: dict[str, dict]) -> None:
        sections[name] = rows
        print(table(rows), "\n", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "extract" in args.only:
            report("extraction (images/s)", extraction(args, net, folder))
        if {"mining", "train"} & set(args.only):
            source = mining_source(args, folder)
            mining_rows, tuples = mining(args, net, source)
            if "mining" in args.only:
                report("mining epoch (images/s)", mining_rows)
            if "train" in args.only:
                training_rows = training(args, net, source, tuples)
                report("training (tuples/s)", training_rows)
                report(
                    "epoch: mining + training (tuples/s)", epoch(args, mining_rows, training_rows)
                )
    if "search" in args.only:
        report("search (queries/s)", search(args))
    print("Summary: ours against the reference, measured side by side above\n")
    print(table(summary(sections, args.device)), "\n")
    print(warnings_text(start_load))
    print(f"\nThe suite took {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
