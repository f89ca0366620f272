"""Inference speed-ups: BatchNorm folding, the untouched original network (precision:
test_precision_probe.py)."""

import pytest
import torch
from torch import nn

from retrieval.extraction.inference import (
    conv_bn_pairs,
    fold_batchnorm,
    inference_copy,
    prepared,
)
from retrieval.models.net import build_net


def _randomise_batchnorm(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_folded_network_gives_the_same_descriptors(backbone):
    net = build_net(backbone, "gem", weights="none").eval()
    _randomise_batchnorm(net)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.backbone.features.modules())
    fast = inference_copy(net, fold_bn=True)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fast.backbone.features.modules())
    assert left == 0 < n_bn  # every BatchNorm follows its own convolution in these trunks
    x = torch.rand(2, 3, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)


def test_inference_copy_leaves_the_original_alone():
    net = build_net("resnet18", "gem", weights="none").train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = inference_copy(net, channels_last=True)
    assert net.training and not fast.training
    assert not any(p.requires_grad for p in fast.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.backbone.features[0].weight.is_contiguous()


class _SharedConv(nn.Module):
    """One convolution called twice, each call followed by its own BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn_a, self.bn_b = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn_a(self.conv(x)) + self.bn_b(self.conv(x))
        return self.bn2(self.conv2(y))


def test_only_single_use_pairs_are_folded():
    module = _SharedConv().eval()
    _randomise_batchnorm(module)
    assert conv_bn_pairs(module) == [("conv2", "bn2")]
    x = torch.rand(1, 3, 5, 5)
    expected = module(x)
    assert fold_batchnorm(module) == 1
    assert isinstance(module.bn2, nn.Identity) and isinstance(module.bn_a, nn.BatchNorm2d)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-6)


def test_untraceable_modules_are_left_as_they_are():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    module = DataDependent().eval()
    assert fold_batchnorm(module) == 0
    assert isinstance(module.bn, nn.BatchNorm2d)


def test_a_prepared_copy_is_reused_only_for_its_own_settings():
    net = build_net("resnet18", "gem", weights="none")
    fast = inference_copy(net, "cpu", channels_last=True)
    assert prepared(fast, "cpu", channels_last=True) is fast
    other = prepared(fast, "cpu", channels_last=False)
    assert other is not fast
    assert prepared(net, "cpu") is not net  # a trained network is always copied
