"""Local CNN features: the backbone's feature map of every image, each position a descriptor.

Images are prepared and batched exactly as for global descriptors (`extraction.extract`:
shrunk to ``max_side``, queries cropped to their box, batches of equal prepared size, so no
padding reaches the maps), at a single scale and in fp32.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from retrieval.data.transforms import normalize_pixels
from retrieval.extraction.extract import (
    ImageListDataset,
    bucket_batches,
    load_batches,
    prepared_sizes,
)
from retrieval.extraction.inference import inference_copy
from retrieval.models.net import RetrievalNet
from retrieval.types import Box


def iter_feature_maps(
    net: RetrievalNet,
    paths: Sequence[str | Path],
    max_side: int,
    boxes: Sequence[Box | None] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "local features",
    num_workers: int = 0,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (index into paths, C x h x w float32 CPU feature map) for every image, batched
    (in batch order; `num_workers` threads load the images ahead)."""
    paths = list(paths)
    if not paths:
        return
    dataset = ImageListDataset(paths, max_side, boxes)
    batches = bucket_batches(prepared_sizes(paths, max_side, boxes), batch_size)
    device = torch.device(device)
    fast = inference_copy(net, device)  # eval mode, BatchNorm folded; `net` stays untouched
    mean, std = net.meta["mean"], net.meta["std"]
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for indices, pixels in load_batches(dataset, batches, num_workers):
            # No grad, but not inference mode: the maps leave this generator between batches.
            with torch.no_grad():
                images = normalize_pixels(torch.stack(pixels).to(device), mean, std)
                maps = fast.backbone(images).float().cpu()
            bar.update(len(indices))
            yield from zip(indices, maps, strict=True)


def local_descriptors(feature_map: torch.Tensor) -> np.ndarray:
    """The (h * w) x C L2-normalised local descriptors of a C x h x w map, row-major positions."""
    flat = feature_map.flatten(1).T
    return F.normalize(flat, dim=1).numpy().astype(np.float32, copy=False)
