"""EfficientNet-Lite0 keeps its TensorFlow "SAME" padding dynamic under torch.jit.script and
torch.export, with the numbers and state dict keys of before."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

from retrieval.models.efficientnet_lite import (
    EfficientNetLite0,
    SameConv2d,
    pretrained_lite0_path,
    same_padding,
)

SIZES = [(64, 64), (97, 75), (80, 131), (33, 50)]


def _tf_same_total(size: int, kernel: int, stride: int) -> int:
    """TensorFlow's formula for the total "SAME" padding along one axis."""
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (5, 1), (3, 2), (5, 2), (1, 2), (2, 3)])
def test_same_padding_is_tensorflows_at_every_size(kernel: int, stride: int) -> None:
    for size in range(1, 70):
        x = torch.empty(1, 1, size, size + 1)
        left, right, top, bottom = same_padding(x, (kernel, kernel), (stride, stride))
        assert top + bottom == _tf_same_total(size, kernel, stride)
        assert left + right == _tf_same_total(size + 1, kernel, stride)
        assert (top, left) == ((top + bottom) // 2, (left + right) // 2)  # extra at bottom/right


def _lite0() -> EfficientNetLite0:
    """ImageNet Lite0 (installed with the package): random weights give all-zero maps."""
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(pretrained_lite0_path(), weights_only=True))
    return model.eval()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in favour of export
@pytest.mark.parametrize("block", [0, 1, 2])  # no expansion; strided; residual
def test_scripted_lite0_blocks_equal_eager_at_every_size(block: int) -> None:
    module = _lite0()._blocks[block]
    scripted = torch.jit.script(module)
    with torch.no_grad():
        for height, width in SIZES:
            x = torch.rand(1, module._depthwise_conv.in_channels // module.expand, height, width)
            torch.testing.assert_close(scripted(x), module(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_exported_same_conv_pads_by_the_run_time_size(stride: int) -> None:
    torch.manual_seed(0)
    conv = SameConv2d(3, 4, 3, stride=stride).eval()
    dims = {"x": {2: Dim("height", min=4), 3: Dim("width", min=4)}}
    module = torch.export.export(conv, (torch.randn(1, 3, 16, 16),), dynamic_shapes=dims).module()
    for height, width in [(16, 16), (17, 9), (30, 31)]:
        x = torch.randn(1, 3, height, width)
        expected = conv(x)
        assert expected.shape[-2:] == (math.ceil(height / stride), math.ceil(width / stride))
        torch.testing.assert_close(module(x), expected)


def test_lite0_without_expansion_keeps_the_ports_state_dict_keys() -> None:
    keys = set(EfficientNetLite0().state_dict())
    assert "_blocks.0._depthwise_conv.weight" in keys
    assert not any(k.startswith(("_blocks.0._expand_conv", "_blocks.0._bn0")) for k in keys)
    assert {"_blocks.1._expand_conv.weight", "_blocks.1._bn0.running_var"} <= keys


def test_first_block_does_not_clip_its_input() -> None:
    """Without expansion the block applies no ReLU6 before the depthwise convolution."""
    block = _lite0()._blocks[0]
    assert block.expand == 1 and not block.residual
    x = torch.full((1, 32, 8, 8), 10.0)  # above ReLU6's 6

    def without_expansion(inputs: torch.Tensor) -> torch.Tensor:
        depthwise = block._act(block._bn1(block._depthwise_conv(inputs)))
        return block._bn2(block._project_conv(depthwise))

    with torch.no_grad():
        torch.testing.assert_close(block(x), without_expansion(x))
        assert not torch.allclose(block(x), without_expansion(F.relu6(x)))
