"""Mining and training throughput: batched (ours) against one image at a time (cirtorch's way).

    python bench/bench_train.py [--backbone efficientnet_lite0] [--image-size 256] [--qsize 60]
                                [--precision auto|fp32|bf16]

Both paths run side by side in one process on the same synthetic world, network and tuples, and
the table reports their ratio. Mining = extracting the epoch's queries + pool and selecting hard
negatives; training = forward + backward of tuples (5 per optimiser step). Both paths run in
--precision (auto: what the framework measures on this machine for mining and for training), so
the ratio is batching's alone; bench/suite.py compares precisions against cirtorch's way.
"""

from __future__ import annotations

import argparse
import time

import torch

from retrieval.data import formats
from retrieval.data.synthetic import SyntheticConfig, ensure_world
from retrieval.data.transforms import prepare_image
from retrieval.extraction.inference import PRECISIONS, resolve_precision
from retrieval.lightning.module import RetrievalModule
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule, TupleSource
from retrieval.models.net import build_net
from retrieval.pipelines.report import markdown_table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--qsize", type=int, default=60)
    parser.add_argument("--poolsize", type=int, default=300)
    parser.add_argument("--nnum", type=int, default=5)
    parser.add_argument("--tuples", type=int, default=10, help="tuples timed per training path")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--precision", default="auto", help="auto|fp32|bf16 (mining, training)")
    return parser.parse_args()


def time_mining(datamodule: TupleDataModule, net: torch.nn.Module, batch_size: int) -> float:
    """Seconds to mine one epoch with the given extraction batch size."""
    datamodule.config.mining_batch_size = batch_size
    start = time.perf_counter()
    datamodule.mine(net, epoch=0)
    return time.perf_counter() - start


def time_training(
    module: RetrievalModule, batch: list, one_by_one: bool, precision: str = "fp32"
) -> float:
    """Seconds for forward + backward of the tuples, batched or one image at a time."""
    module.zero_grad()
    dtype = PRECISIONS[precision]
    autocast = lambda: torch.autocast("cpu", dtype, enabled=dtype != torch.float32)  # noqa: E731
    start = time.perf_counter()
    if one_by_one:  # cirtorch: each image through the network alone, loss per tuple
        for images, _ in batch:
            with autocast():
                descriptors = torch.cat([module.net(img[None]) for img in images])
            loss = module.loss_fn(descriptors[:1], descriptors[1:2], descriptors[None, 2:])
            loss.backward()
    else:
        for step in range(0, len(batch), 5):
            with autocast():
                loss = module.tuple_loss(batch[step : step + 5])
            loss.backward()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    root = ensure_world(None, SyntheticConfig())
    split = formats.load_sfm_db(root, "synthetic-sfm")["train"]
    source = TupleSource(list(split.image_paths), split.cluster, split.qidxs, split.pidxs)
    net = build_net(args.backbone, "gem", weights=args.weights)
    mining_precision = resolve_precision(args.precision, "cpu", net)
    training_precision = resolve_precision(args.precision, "cpu", net, "training")
    config = MiningConfig(
        qsize=args.qsize,
        poolsize=args.poolsize,
        nnum=args.nnum,
        image_size=args.image_size,
        precision=mining_precision,
    )
    datamodule = TupleDataModule(source, config)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    images = args.qsize + args.poolsize

    time_mining(datamodule, net, 32)  # warm-up (file cache, allocator)
    mining_one = time_mining(datamodule, net, 1)
    mining_batched = time_mining(datamodule, net, 32)
    tuples = datamodule.mine(net, epoch=0)

    module = RetrievalModule(
        net, {"name": "contrastive", "margin": 0.7}, {"name": "adam", "lr": 1e-6}
    ).train()
    mean, std = net.meta["mean"], net.meta["std"]
    batch = [
        (
            [
                prepare_image(source.paths[i], args.image_size, mean, std)
                for i in tuples.image_indices(t)
            ],
            None,
        )
        for t in range(args.tuples)
    ]
    time_training(module, batch[:5], False, training_precision)  # warm-up
    train_one = time_training(module, batch, True, training_precision)
    train_batched = time_training(module, batch, False, training_precision)

    rows = {
        "mining, one image at a time": {"images/s": images / mining_one, "ratio": 1.0},
        "mining, batched (32)": {
            "images/s": images / mining_batched,
            "ratio": mining_one / mining_batched,
        },
        "training, one image at a time": {"tuples/s": args.tuples / train_one, "ratio": 1.0},
        "training, batched (5 tuples)": {
            "tuples/s": args.tuples / train_batched,
            "ratio": train_one / train_batched,
        },
    }
    print(
        f"{args.backbone}-GeM, {args.image_size} px, {args.nnum} negatives, "
        f"{torch.get_num_threads()} threads, channels_last={args.channels_last}, precision: "
        f"mining {mining_precision}, training {training_precision}"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
