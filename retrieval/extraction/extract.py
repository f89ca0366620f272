"""Descriptor extraction: batched, multi-scale, mixed-precision, shardable, with an on-disk cache.

Batching. ``batching="bucket"`` groups images whose prepared size (after the query crop and the
shrink-to-``max_side`` resize) is identical, so no batch needs padding and every descriptor equals
the one-image-at-a-time forward. ``batching="pad"`` sorts images by aspect ratio and area, pads
each batch at the bottom/right and lets the network mask the padded features; it is faster when
all sizes differ but only approximate: convolutions near the border see the padding, and
backbones with global operations (the squeeze-excitation blocks of EfficientNet) see all of it
(cosine to the one-by-one descriptor ~0.93-0.97 for 320 px photos padded by a third).

Multi-scale. As cirtorch's ``extract_ms``: each prepared image is resized by every scale with
bilinear interpolation, and the per-scale descriptors are combined as ``mean_s(d_s^p)^(1/p)``,
then L2-normalised. ``p`` is the learned GeM exponent for a GeM network without a whitening layer
(as cirtorch, whose descriptors may be negative after whitening) and 1 otherwise.

Sharding. ``shard=(rank, world_size)`` extracts the contiguous block ``shard_range(n, rank,
world_size)`` of the images, so the gathered shards of all ranks, concatenated by rank
(``merge_shards``), are the descriptors of all images in their original order.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from retrieval.data import transforms
from retrieval.data.transforms import normalize_pixels, open_image, pad_batch, prepare_pixels
from retrieval.extraction.inference import PRECISIONS, prepared, resolve_precision
from retrieval.extraction.quantize import CALIBRATION_IMAGES
from retrieval.types import Box

logger = logging.getLogger(__name__)

BATCHINGS = ("bucket", "pad")


# ----------------------------------------------------------------------------------------------
# dataset and batching
# ----------------------------------------------------------------------------------------------


class ImageListDataset(Dataset):
    """Prepared uint8 images (3 x H x W) of a list of paths, each with an optional query box.

    Normalisation is left to the device (`normalize_pixels`): a quarter of the bytes to copy.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        max_side: int,
        boxes: Sequence[Box | None] | None = None,
        pin_memory: bool = False,
    ) -> None:
        if boxes is not None and len(boxes) != len(paths):
            raise ValueError(f"got {len(boxes)} boxes for {len(paths)} images; give one per image")
        self.paths = [str(p) for p in paths]
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)
        self.max_side = int(max_side)
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        pixels = prepare_pixels(self.paths[index], self.max_side, box=self.boxes[index])
        return index, pixels.pin_memory() if self.pin_memory else pixels


def load_batches(
    dataset: ImageListDataset, batches: Sequence[list[int]], num_workers: int
) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """Yield (indices, images) per batch, in order, prepared by `num_workers` threads ahead.

    Threads rather than DataLoader processes: decoding and resizing release the GIL, and no
    worker forks a process holding a CUDA context or ships float tensors through shared memory.
    """

    def load(batch: list[int]) -> tuple[list[int], list[torch.Tensor]]:
        return batch, [dataset[i][1] for i in batch]

    if num_workers <= 0:
        yield from map(load, batches)
        return
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(load, batch))
            if len(pending) > 2 * num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def prepared_size(path: str | Path, max_side: int, box: Box | None = None) -> tuple[int, int]:
    """(H, W) that `prepare_image` will produce, read from the image header without decoding."""
    with open_image(path) as img:  # a missing, non-image or oversized file is named
        size = img.size
    return transforms.prepared_size(size, max_side, box)


def prepared_sizes(
    paths: Sequence[str | Path], max_side: int, boxes: Sequence[Box | None] | None = None
) -> list[tuple[int, int]]:
    """`prepared_size` of every image, reading headers in a few threads (I/O bound)."""
    boxes = list(boxes) if boxes is not None else [None] * len(paths)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(prepared_size, paths, [max_side] * len(paths), boxes))


def bucket_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of indices whose sizes are identical; buckets in order of first appearance."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        buckets.setdefault(tuple(size), []).append(i)
    return [
        idx[start : start + batch_size]
        for idx in buckets.values()
        for start in range(0, len(idx), batch_size)
    ]


def padded_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by aspect ratio then area, so that little padding is needed."""

    def shape_key(i: int) -> tuple[float, int]:
        h, w = sizes[i]
        return h / w, h * w

    order = sorted(range(len(sizes)), key=shape_key)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


# ----------------------------------------------------------------------------------------------
# sharding
# ----------------------------------------------------------------------------------------------


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the contiguous block of n items that `rank` of `world_size` handles."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid shard rank={rank} of world_size={world_size}")
    return n * rank // world_size, n * (rank + 1) // world_size


def merge_shards(shards: Sequence[np.ndarray], n: int | None = None) -> np.ndarray:
    """Reassemble the descriptors of all ranks (given in rank order) into the original order."""
    merged = np.concatenate([np.asarray(s, dtype=np.float32) for s in shards], axis=0)
    if n is not None and len(merged) != n:
        raise ValueError(f"shards hold {len(merged)} descriptors, expected {n}")
    return merged


# ----------------------------------------------------------------------------------------------
# network helpers
# ----------------------------------------------------------------------------------------------


def multiscale_power(net: nn.Module, num_scales: int) -> float:
    """Exponent p of the multi-scale mean: the network's (GeM p without whitening), 1 alone."""
    return 1.0 if num_scales <= 1 else net.multiscale_exponent()


def _rescale(images: list[torch.Tensor], scale: float) -> list[torch.Tensor]:
    """Bilinear resize by `scale` (as cirtorch's extract_ms); one call when sizes are equal."""
    if scale == 1:
        return images
    if len({img.shape for img in images}) == 1:
        batch = torch.stack(images)
        return list(F.interpolate(batch, scale_factor=scale, mode="bilinear", align_corners=False))
    return [
        F.interpolate(img[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]
        for img in images
    ]


def _describe(
    net: nn.Module,
    pixels: list[torch.Tensor],
    scales: Sequence[float],
    p: float,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
) -> torch.Tensor:
    """Multi-scale, L2-normalised descriptors (B x D, float32) of a list of uint8 images."""
    mean, std = net.meta["mean"], net.meta["std"]
    images = [normalize_pixels(x.to(device, non_blocking=True), mean, std) for x in pixels]
    total = None
    for s in scales:
        batch, sizes = pad_batch(_rescale(images, s))
        padded = bool((sizes != sizes[0]).any())
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            d = net(batch, sizes.to(device) if padded else None)
        d = d.float()
        # GeM descriptors are positive; the clamp only guards low-precision round-off.
        d = d if p == 1 else d.clamp(min=0).pow(p)
        total = d if total is None else total + d
    v = total / len(scales)
    return F.normalize(v if p == 1 else v.pow(1.0 / p), dim=-1)


# ----------------------------------------------------------------------------------------------
# extraction
# ----------------------------------------------------------------------------------------------


def extract_descriptors(
    net: nn.Module,
    paths: Sequence[str | Path],
    max_side: int = 1024,
    boxes: Sequence[Box | None] | None = None,
    scales: Sequence[float] = (1.0,),
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    batching: str = "bucket",
    precision: str = "fp32",
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "extract",
    shard: tuple[int, int] | None = None,
    fold_bn: bool = True,
    compile: bool = False,
) -> np.ndarray:
    """Global descriptors (N x D float32, rows in the order of `paths`) of images.

    `net` is a network with ``forward(images, image_sizes=None)`` and a ``meta`` holding 'mean',
    'std' (and 'pooling', 'out_dim'); an eval-mode copy of it runs on `device` without grad
    (BatchNorm folded unless `fold_bn=False`, compiled with `compile=True`), `net` itself is
    left as it is; a `inference.inference_copy` made with these settings is used as
    it is, without another copy. `precision="auto"` picks the fastest accurate one for the device
    (`inference.resolve_precision`); `precision="int8"` (CPU) quantises the trunk,
    calibrated on a few images of `paths` (`calibration_batches`). With
    `shard=(rank, world_size)` only the block ``shard_range(len(paths), rank, world_size)`` is
    extracted (boxes are sliced alike).
    """
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    dtype = PRECISIONS[precision]
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive factors, got {scales}")
    if boxes is not None and len(boxes) != len(paths):
        raise ValueError(f"got {len(boxes)} boxes for {len(paths)} images; give one per image")
    paths = list(paths)
    calibration = None
    if precision == "int8":
        # Calibrated on the whole list before sharding, so that every rank quantises alike.
        calibration = functools.partial(
            calibration_batches, net, ImageListDataset(paths, max_side, boxes), scales
        )
    if shard is not None:
        start, stop = shard_range(len(paths), *shard)
        paths = paths[start:stop]
        boxes = list(boxes)[start:stop] if boxes is not None else None

    if not paths:
        return np.zeros((0, int(net.meta["out_dim"])), dtype=np.float32)
    dataset = ImageListDataset(paths, max_side, boxes, pin_memory=device.type == "cuda")
    sizes = prepared_sizes(paths, max_side, boxes)
    make_batches = bucket_batches if batching == "bucket" else padded_batches
    batches = make_batches(sizes, batch_size)
    p = multiscale_power(net, len(scales))
    fast = prepared(net, device, channels_last, fold_bn, compile, calibration)
    out: np.ndarray | None = None
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress)
    with bar, torch.inference_mode():
        for indices, pixels in load_batches(dataset, batches, num_workers):
            if batching == "bucket" and len({x.shape for x in pixels}) > 1:
                logger.warning("bucket batch with mixed sizes (size prediction off); padding it")
            v = _describe(fast, pixels, scales, p, device, dtype, channels_last).cpu().numpy()
            if out is None:
                out = np.empty((len(dataset), v.shape[1]), dtype=np.float32)
            out[indices] = v
            bar.update(len(indices))
    return out


def calibration_batches(
    net: nn.Module,
    dataset: ImageListDataset,
    scales: Sequence[float],
    count: int = CALIBRATION_IMAGES,
) -> Iterator[torch.Tensor]:
    """Normalised single-image batches, at every scale, of `count` images spread over `dataset`.

    The int8 activation ranges are observed on these (`retrieval.extraction.quantize`).
    """
    mean, std = net.meta["mean"], net.meta["std"]
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round())
    for index in picks.astype(int):
        image = normalize_pixels(dataset[index][1], mean, std)
        for scale in scales:
            yield _rescale([image], scale)[0][None]


def extract_distributed(net: nn.Module, paths: Sequence[str | Path], **kwargs: Any) -> np.ndarray:
    """`extract_descriptors` split over the torch.distributed ranks; every rank gets all N x D."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return extract_descriptors(net, paths, **kwargs)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    part = extract_descriptors(net, paths, shard=(rank, world_size), **kwargs)
    shards: list[Any] = [None] * world_size
    dist.all_gather_object(shards, part)
    return merge_shards(shards, len(paths))
