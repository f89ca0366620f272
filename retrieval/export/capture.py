"""The exported model's contract, and its capture by torch.export with dynamic sizes.

Contract: float32 RGB images, B x 3 x H x W, values in [0, 1] (torchvision's ``to_tensor``);
the network's mean/std normalisation is inside. Output: B x D float32 descriptors, L2-normalised,
at the one scale given. Batch, height and width are dynamic; height and width start at the
smallest size whose feature map is 2 x 2 (``min_side``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from retrieval.models.net import RetrievalNet

# Sides tried for the smallest exportable size: the largest stride of any backbone is 32.
_MAX_MIN_SIDE = 1024
# At a 1-cell map torch.export specialises broadcasts to size 1: start where the map has 2.
_MIN_CELLS = 2


class ExportError(ValueError):
    """A network that cannot be exported, or an export that failed its check; says why and what
    to do instead."""


class ImageDescriptor(nn.Module):
    """RGB images in [0, 1] -> L2-normalised descriptors: the network with its normalisation."""

    def __init__(self, net: RetrievalNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(net.meta["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(net.meta["std"]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W floats in [0, 1] to B x D descriptors."""
        return self.net((images - self.mean) / self.std)


def check_exportable(net: nn.Module) -> None:
    """Raise ExportError for a network no exporter can represent faithfully."""
    if not isinstance(net, RetrievalNet):
        raise ExportError(
            f"export takes a RetrievalNet (load_checkpoint or build_net), got {type(net).__name__}"
        )
    quantised = [name for name, m in net.named_modules() if _is_quantised(m)]
    if quantised:
        raise ExportError(
            f"the network holds int8-quantised modules (e.g. '{quantised[0]}'), which torch.export "
            "cannot capture: export the fp32 network (load_checkpoint), then quantise the "
            "exported model with its runtime's tools (e.g. onnxruntime.quantization)."
        )


def _is_quantised(module: nn.Module) -> bool:
    """A module of torch's int8 stack, or one holding quantised tensors."""
    if type(module).__module__.startswith("torch.ao.nn.quantized"):
        return True
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return any(t.is_quantized for t in tensors)


def min_side(net: RetrievalNet) -> int:
    """The smallest side n for which an n x n image gives a feature map of 2 x 2 cells or more."""
    low, high = 1, _MAX_MIN_SIDE
    if not _map_is_large_enough(net, high):
        raise ExportError(f"backbone '{net.backbone.name}' gives no 2 x 2 map below {high} px")
    while low < high:  # the map grows with the image: bisect
        mid = (low + high) // 2
        if _map_is_large_enough(net, mid):
            high = mid
        else:
            low = mid + 1
    return low


def _map_is_large_enough(net: RetrievalNet, side: int) -> bool:
    try:
        h, w = net.backbone.feature_size(side, side)
    except ValueError:  # too small for the backbone at all
        return False
    return min(h, w) >= _MIN_CELLS


def export_program(net: RetrievalNet, side: int) -> tuple[ExportedProgram, ImageDescriptor]:
    """Capture the network with dynamic batch, and height and width from `side` up; also the
    eager model captured."""
    check_exportable(net)
    model = ImageDescriptor(copy.deepcopy(net).cpu().float()).eval()
    example = torch.rand(2, 3, max(side, 224), max(side, 224))
    shapes: dict[str, Any] = {
        "images": {
            0: Dim("batch", min=1),
            2: Dim("height", min=side),
            3: Dim("width", min=side),
        }
    }
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as err:  # torch.export raises many types; all mean "cannot capture"
        raise ExportError(
            f"torch.export cannot capture the network {describe(net)} for every image size: "
            f"{first_line(err)}. A pooling or backbone that computes in Python from the image "
            "size (as the regional poolings choose their regions) cannot be exported with "
            "dynamic sizes; export a network with a global pooling."
        ) from err
    return program, model


def describe(net: RetrievalNet) -> str:
    """A short name such as 'resnet18-gem' or 'resnet50-gem-whiten512'."""
    meta = net.meta
    name = f"{meta['backbone']}-{meta['pooling']}"
    return name + (f"-whiten{meta['whitening']}" if meta.get("whitening") else "")


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, with its type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
