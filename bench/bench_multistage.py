"""One AP-loss training step on a batch larger than memory: multi-stage against direct backward.

    python bench/bench_multistage.py [--batch 1024] [--image-size 128] [--chunk 64] [--memory-gb G]

The network is the default EfficientNet-Lite0-GeM (ImageNet weights, BatchNorm frozen, NHWC) on
random images of image-size x image-size, m x 8 images per batch, the AP loss and one Adam step.

* multi-stage (lightning/multistage.py): the whole batch forwarded in chunks without gradients, the
  loss and its gradient on the descriptors, then each chunk forwarded again and back-propagated;
  memory is that of one chunk, whatever the batch.
* direct: one forward of the whole batch with gradients and one backward. Its activation memory
  grows with the batch, so it runs at the largest power-of-two batch that fits in --memory-gb
  (default: 80% of the memory available now), estimated from a 16-image step. With
  --like-for-like multi-stage also runs at that batch (its extra forward, at equal batch).

Each measurement runs in its own subprocess. *peak RSS* is the process's resident high-water mark
(VmHWM, Linux) during the timed step, read after resetting VmHWM through /proc/self/clear_refs;
*above network* is that peak less the memory resident once the network was built (so it counts
the batch of images, activations, gradients and the optimiser state).
Times are one step, after a warm-up step at the same shapes (the whole batch for direct, one
chunk for multi-stage).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_search import status_mb  # noqa: E402  (the script's folder is on sys.path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024, help="images per multi-stage step")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=64, help="multi-stage chunk size")
    parser.add_argument("--per-class", type=int, default=8, help="k images per class")
    parser.add_argument("--memory-gb", type=float, default=None, help="memory the direct may use")
    parser.add_argument(
        "--like-for-like", action="store_true", help="also multi-stage at the direct's batch"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def available_gb() -> float:
    """MemAvailable of the machine, in GB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def worker(method: str, batch: int, args: argparse.Namespace) -> dict:
    """One training step (after a warm-up step) in this process; its time and memory."""
    import torch

    from retrieval.lightning.module import freeze_batchnorm
    from retrieval.lightning.multistage import multistage_backward
    from retrieval.losses import APLoss
    from retrieval.models.net import build_net

    torch.manual_seed(0)
    net = build_net("efficientnet_lite0", "gem", weights="imagenet")
    net = net.to(memory_format=torch.channels_last).train()
    freeze_batchnorm(net)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    loss_fn = APLoss()

    def step(images: torch.Tensor, labels: torch.Tensor) -> float:
        optimizer.zero_grad()
        if method == "direct":
            loss = loss_fn.label_loss(net(images), labels)
            loss.backward()
        else:
            loss = multistage_backward(
                lambda a, b: net(images[a:b]), len(labels), loss_fn.label_loss, labels, args.chunk
            )
        optimizer.step()
        return float(loss.detach())

    def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randn(n, 3, args.image_size, args.image_size)
        return images.contiguous(memory_format=torch.channels_last), torch.arange(n) // 2

    resident = status_mb("VmRSS")  # the network, before any batch
    # Warm-up at the shapes the step uses: a first call at a new shape creates its kernels.
    step(*data(batch if method == "direct" else min(batch, args.chunk)))
    net.load_state_dict(initial)  # the timed step starts from the same weights in every run
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    torch.manual_seed(1)
    images, labels = data(batch)
    labels = torch.arange(batch) // args.per_class
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the step's own peak follows
    start = time.perf_counter()
    loss = step(images, labels)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    return {"seconds": seconds, "peak_mb": peak, "added_mb": peak - resident, "loss": loss}


def measure(method: str, batch: int, args: argparse.Namespace) -> dict | None:
    """Run one measurement in a subprocess; None when it was killed (out of memory)."""
    command = [sys.executable, __file__, "--worker", f"{method}:{batch}"]
    command += ["--image-size", str(args.image_size), "--chunk", str(args.chunk)]
    command += ["--per-class", str(args.per_class)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{method} at batch {batch} failed ({done.returncode}): {done.stderr[-500:]}")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {method:>11} batch {batch:5d}: {result['seconds']:7.1f} s, "
        f"peak {result['peak_mb'] / 1024:5.2f} GB",
        flush=True,
    )
    return result


def largest_direct_batch(args: argparse.Namespace, budget_mb: float) -> int:
    """The largest power-of-two direct batch whose estimated peak fits the budget (<= --batch)."""
    small = 16
    probe = measure("direct", small, args)
    if probe is None:
        raise SystemExit("the direct step failed even at 16 images")
    per_image = probe["added_mb"] / small  # activations (and the images) grow with the batch
    base = probe["peak_mb"] - probe["added_mb"]
    batch = small
    while batch * 2 <= args.batch and base + batch * 2 * per_image <= budget_mb:
        batch *= 2
    print(
        f"  direct: ~{per_image:.0f} MB per image -> batch {batch} fits {budget_mb / 1024:.1f} GB"
    )
    return batch


def main() -> None:
    args = parse_args()
    if args.worker:
        method, batch = args.worker.split(":")
        print(json.dumps(worker(method, int(batch), args)))
        return
    from retrieval.pipelines.report import markdown_table

    budget_mb = 1024 * (args.memory_gb or 0.8 * available_gb())
    print(f"batch {args.batch} at {args.image_size} px, chunks of {args.chunk}; measuring...")
    direct_batch = largest_direct_batch(args, budget_mb)
    direct = None
    while direct is None and direct_batch >= 16:
        direct = measure("direct", direct_batch, args)
        direct_batch = direct_batch if direct else direct_batch // 2
    runs = {f"direct, batch {direct_batch}": direct}
    if args.like_for_like:
        runs[f"multi-stage, batch {direct_batch}"] = measure("multistage", direct_batch, args)
    runs[f"multi-stage, batch {args.batch}"] = measure("multistage", args.batch, args)
    rows = {}
    for name, r in runs.items():
        if r is None:
            continue
        batch = int(name.rsplit(" ", 1)[1])
        rows[name] = {
            "step s": r["seconds"],
            "ms / image": 1000 * r["seconds"] / batch,
            "peak RSS GB": r["peak_mb"] / 1024,
            "above network GB": r["added_mb"] / 1024,
            "loss": r["loss"],
        }
    print(f"\nOne AP-loss step, EfficientNet-Lite0-GeM, {args.image_size} px, CPU:\n")
    print(markdown_table(rows, digits=3))


if __name__ == "__main__":
    main()
