"""RetrievalNet: backbone -> pooling -> L2 -> (whitening -> L2), rebuildable from its `meta`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retrieval.models.backbones import Backbone, build_backbone
from retrieval.models.pooling import Pooling, pooling_for_backbone


class RetrievalNet(nn.Module):
    """An image-retrieval network producing L2-normalised global descriptors (N x D rows)."""

    def __init__(
        self,
        backbone: Backbone,
        pooling: Pooling,
        whitening: nn.Linear | None,
        meta: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.whitening = whitening
        self.meta = meta

    @property
    def out_dim(self) -> int:
        return int(self.meta["out_dim"])

    def feature_mask(self, image_sizes: torch.Tensor, map_size: tuple[int, int]) -> torch.Tensor:
        """Validity mask (B x h x w) of the feature map for images padded at the bottom/right."""
        h, w = map_size
        mask = torch.zeros((len(image_sizes), h, w), dtype=torch.bool, device=image_sizes.device)
        for i, (ih, iw) in enumerate(image_sizes.tolist()):
            fh, fw = self.backbone.feature_size(ih, iw)
            mask[i, :fh, :fw] = True
        return mask

    def pool(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled, L2-normalised descriptors before whitening, computed in at least float32."""
        # Under bf16/fp16 autocast the trunk's map is half precision; GeM's powers, its learned p
        # and the means over the map keep full precision (a no-op in fp32).
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        return F.normalize(self.pooling(features, mask=mask), dim=-1)

    def forward(
        self, images: torch.Tensor, image_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Descriptors of a batch; `image_sizes` (B x 2) marks the valid part of padded images."""
        features = self.backbone(images)
        mask = None
        if image_sizes is not None:
            full = torch.tensor(images.shape[-2:], device=image_sizes.device)
            if bool((image_sizes < full).any()):  # some images are padded
                mask = self.feature_mask(image_sizes, tuple(features.shape[-2:]))
        return self.whiten(self.pool(features, mask))

    def whiten(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Apply the whitening layer (if any) and re-normalise."""
        if self.whitening is None:
            return descriptors
        return F.normalize(self.whitening(descriptors), dim=-1)

    def multiscale_exponent(self) -> float:
        """Exponent p of the multi-scale mean: the pooling's, or 1 when whitening follows it."""
        if self.whitening is not None:
            return 1.0
        return self.pooling.multiscale_exponent()


def build_net(
    backbone: str = "efficientnet_lite0",
    pooling: str = "gem",
    pooling_args: dict[str, Any] | None = None,
    weights: str = "none",
    whitening: int | None = None,
) -> RetrievalNet:
    """Build a RetrievalNet from names; `whitening` is the output dimension of a whitening layer."""
    pooling_args = dict(pooling_args or {})
    trunk = build_backbone(backbone, weights=weights)
    pool = pooling_for_backbone(pooling, trunk, pooling_args)
    # A pooling initialised from a file (BoW vocabulary) gives arguments that rebuild its shape
    # without the file; its weights come from the state dict.
    pooling_args = pool.rebuild_args(pooling_args)
    pooled_dim = pool.out_dim(trunk.out_dim)
    whiten = None
    if whitening:
        whiten = nn.Linear(pooled_dim, int(whitening), bias=True)
        _init_whitening_identity(whiten)
    meta = {
        "backbone": backbone,
        "pooling": pooling,
        "pooling_args": pooling_args,
        "whitening": int(whitening) if whitening else None,
        "mean": list(trunk.mean),
        "std": list(trunk.std),
        "pooled_dim": int(pooled_dim),
        "out_dim": int(whitening) if whitening else int(pooled_dim),
    }
    return RetrievalNet(trunk, pool, whiten, meta)


def _init_whitening_identity(layer: nn.Linear) -> None:
    """Start a whitening layer as a projection on the leading coordinates (identity when square)."""
    with torch.no_grad():
        layer.weight.zero_()
        n = min(layer.weight.shape)
        layer.weight[:n, :n] = torch.eye(n)
        layer.bias.zero_()


def net_from_meta(meta: dict[str, Any]) -> RetrievalNet:
    """Rebuild an (untrained) network from a checkpoint's meta."""
    return build_net(
        backbone=meta["backbone"],
        pooling=meta["pooling"],
        pooling_args=meta.get("pooling_args"),
        weights="none",
        whitening=meta.get("whitening"),
    )


def embed_images(net: RetrievalNet, images: list[torch.Tensor]) -> torch.Tensor:
    """Descriptors of variable-size images (list of 3 x h x w), batching those of equal size.

    Grouping by size keeps every forward exact (no padding), so a batch gives the same descriptors
    and gradients as one image at a time, while equal-size images share one forward pass.
    """
    if not images:
        raise ValueError("embed_images needs at least one image")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[-2:]), []).append(i)
    out = None
    for indices in groups.values():
        desc = net(torch.stack([images[i] for i in indices]))
        if out is None:
            out = desc.new_empty((len(images), desc.shape[1]))
        out[indices] = desc
    return out
