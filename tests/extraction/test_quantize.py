"""Int8 inference: plain-layer equivalents, quantised trunks, int8 extraction end to end."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.ao.nn import quantized

from retrieval.extraction.extract import ImageListDataset, calibration_batches, extract_descriptors
from retrieval.extraction.inference import (
    fold_batchnorm,
    inference_copy,
    prepared,
    resolve_precision,
)
from retrieval.extraction.quantize import CalibrationError, PerShapeCopies, quantize_trunk
from retrieval.models.efficientnet_lite import SameConv2d, SamePad
from retrieval.models.net import build_net

UKBENCH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ukbench_sample"


@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (5, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize("height,width", [(17, 24), (16, 16), (9, 31)])
def test_plain_equivalent_of_same_conv_is_exact(kernel, stride, height, width):
    torch.manual_seed(0)
    conv = SameConv2d(4, 6, kernel, stride=stride)
    conv.bias = nn.Parameter(torch.randn(6))  # as after BatchNorm folding
    plain = conv.plain_equivalent()
    # Only the size-dependent padding needs the extra module; everything else is one Conv2d.
    assert isinstance(plain, nn.Sequential) == (stride > 1)
    if stride > 1:
        assert isinstance(plain[0], SamePad) and plain[1].padding == (0, 0)
    x = torch.randn(2, 4, height, width)
    torch.testing.assert_close(plain(x), conv(x), rtol=0, atol=1e-6)
    assert not conv.eval().plain_equivalent().training  # the mode carries over


def _ukbench_photos(count: int) -> list[Path]:
    if not (UKBENCH / "groundtruth.csv").exists():
        pytest.skip(f"real photographs not found at {UKBENCH} (../shared/data is absent)")
    with open(UKBENCH / "groundtruth.csv") as f:
        rows = list(csv.DictReader(f))
    return [UKBENCH / r["path"] for r in rows[:count]]


def _gem(features: torch.Tensor) -> torch.Tensor:
    """Independent GeM (p=3) + L2 normalisation of a B x C x h x w map."""
    pooled = features.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_int8_lite0_descriptors_stay_close_to_fp32_on_real_photos():
    """ImageNet EfficientNet-Lite0 on 16 UKBench photos (4 objects x 4 views) at 160 px."""
    from retrieval.data.transforms import prepare_image

    net = build_net("efficientnet_lite0", "gem", weights="imagenet")
    trunk = inference_copy(net).backbone.features
    mean, std = net.meta["mean"], net.meta["std"]
    images = [prepare_image(p, 160, mean, std)[None] for p in _ukbench_photos(16)]
    int8 = quantize_trunk(trunk, images[::2])
    convs = [m for m in int8.modules() if isinstance(m, quantized.Conv2d)]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in trunk.modules())  # all quantised
    with torch.inference_mode():
        fp32 = torch.cat([_gem(trunk(x)) for x in images])
        low = torch.cat([_gem(int8(x)) for x in images])
    cosine = (fp32 * low).sum(dim=1)
    assert cosine.min() > 0.97 and cosine.mean() > 0.99
    assert (fp32 - low).abs().max() > 1e-4  # it did compute in int8
    # The ranking of each photo's views (same object = rows 4k..4k+3) survives.
    for descriptors in (fp32, low):
        top = (descriptors @ descriptors.T).topk(4, dim=1).indices // 4
        assert (top == torch.arange(16)[:, None] // 4).float().mean() > 0.8


def test_untraceable_trunk_is_refused_with_a_clear_message():
    class ShapeDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.shape[-1] > 8 else x  # control flow on a traced value

    with pytest.raises(CalibrationError, match="ShapeDependent.*extract.precision=fp32"):
        quantize_trunk(ShapeDependent(), [torch.rand(1, 3, 16, 16)])
    with pytest.raises(CalibrationError, match="at least one calibration image"):
        quantize_trunk(ShapeDependent(), [])


def test_int8_is_cpu_only_and_does_not_compile():
    assert resolve_precision("int8", "cpu") == "int8"
    with pytest.raises(ValueError, match="int8 runs on CPUs only.*bf16, fp16 or auto"):
        resolve_precision("int8", "cuda")
    net = build_net("resnet18", "gem", weights="none")
    with pytest.raises(ValueError, match="compile=false"):
        inference_copy(net, compile=True, calibration=lambda: [torch.rand(1, 3, 32, 32)])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Eight smooth random JPEGs of mixed sizes."""
    root = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(64, 48), (48, 64), (64, 48), (40, 40)] * 2):
        coarse = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
        img.save(root / f"{i}.jpg", quality=95)
        paths.append(str(root / f"{i}.jpg"))
    return paths


def test_int8_extraction_is_close_deterministic_and_shards_alike(photos):
    torch.manual_seed(0)
    net = build_net("resnet18", "gem", weights="none")
    options = {"max_side": 64, "scales": (1.0, 0.75), "progress": False}
    fp32 = extract_descriptors(net, photos, **options)
    int8 = extract_descriptors(net, photos, precision="int8", **options)
    assert (fp32 * int8).sum(axis=1).min() > 0.98
    assert np.abs(fp32 - int8).max() > 1e-4
    again = extract_descriptors(net, photos, precision="int8", **options)
    np.testing.assert_array_equal(again, int8)
    # Each shard calibrates on the whole list, so the shards assemble the unsharded result.
    shards = [
        extract_descriptors(net, photos, precision="int8", shard=(rank, 3), **options)
        for rank in range(3)
    ]
    np.testing.assert_allclose(np.concatenate(shards), int8, atol=1e-6)


def test_calibration_spreads_over_the_list_at_every_scale(photos):
    net = build_net("resnet18", "gem", weights="none")
    dataset = ImageListDataset(photos, 64)
    batches = list(calibration_batches(net, dataset, (1.0, 0.5), count=3))
    assert len(batches) == 6  # images 0, 4 and 7 (linspace over 8), two scales each
    sizes = [tuple(b.shape[-2:]) for b in batches]
    assert sizes == [(48, 64), (24, 32), (48, 64), (24, 32), (40, 40), (20, 20)]
    assert batches[0].dtype == torch.float32 and batches[0].abs().max() < 5  # normalised


def test_prepared_int8_copy_is_reused_with_its_calibration():
    net = build_net("resnet18", "gem", weights="none")
    calls = []

    def calibration():
        calls.append(1)
        return [torch.rand(1, 3, 32, 32)]

    int8 = prepared(net, calibration=calibration)
    assert prepared(int8, calibration=calibration) is int8 and len(calls) == 1
    with pytest.raises(ValueError, match="int8 inference copy already"):
        prepared(int8)  # an fp32 copy cannot be made from int8 weights


def test_quantising_leaves_the_float_trunk_alone():
    torch.manual_seed(0)
    trunk = build_net("resnet18", "gem", weights="none").backbone.features.eval()
    assert fold_batchnorm(trunk) > 0
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    x = torch.rand(1, 3, 64, 48) * 2 - 1
    int8 = quantize_trunk(trunk, [x])
    for k, v in trunk.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(isinstance(m, quantized.Conv2d) for m in trunk.modules())
    with torch.inference_mode():
        cosine = torch.nn.functional.cosine_similarity(_gem(trunk(x)), _gem(int8(x)))
    assert cosine.item() > 0.99


def test_each_input_shape_runs_on_its_own_copy_least_recent_dropped():
    torch.manual_seed(0)
    trunk = build_net("resnet18", "gem", weights="none").backbone.features.eval()
    fold_batchnorm(trunk)
    int8 = quantize_trunk(trunk, [torch.rand(1, 3, 40, 40) * 2 - 1])
    assert isinstance(int8, PerShapeCopies)
    reference = copy.deepcopy(int8.quantized)  # the one module every shape would share
    int8.capacity = 2
    sizes = [(40, 40), (32, 48), (40, 40), (24, 24), (32, 48)]
    inputs = {size: torch.rand(1, 3, *size) * 2 - 1 for size in sizes}
    with torch.inference_mode():
        for size in sizes:
            torch.testing.assert_close(int8(inputs[size]), reference(inputs[size]))
    # (40, 40) was used before (24, 24), so the copy for (32, 48) made room and came back new.
    assert [key[0][-2:] for key in int8._copies] == [(24, 24), (32, 48)]
    assert len({id(m) for m in int8._copies.values()}) == 2


@pytest.mark.parametrize(
    "backbone,fold_bn",
    [
        ("vgg16", True),
        ("densenet121", True),
        ("efficientnet_b0", True),
        ("convnext_tiny", True),
        ("efficientnet_lite0", False),  # the quantiser fuses the BatchNorms itself
    ],
)
def test_every_kind_of_trunk_quantises(backbone, fold_bn):
    """Plain stacks, concatenations, SiLU with squeeze-excitation, LayerNorm with permutes."""
    torch.manual_seed(0)
    net = build_net(backbone, "gem", weights="none")
    x = torch.rand(1, 3, 96, 128) * 2 - 1
    int8 = inference_copy(net, fold_bn=fold_bn, calibration=lambda: [x])
    assert any(isinstance(m, quantized.Conv2d) for m in int8.modules())
    with torch.inference_mode():
        cosine = torch.nn.functional.cosine_similarity(inference_copy(net)(x), int8(x))
    assert cosine.item() > 0.99
