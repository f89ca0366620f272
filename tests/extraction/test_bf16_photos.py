"""bf16 on real photos: ResNet descriptors within round-off of fp32; a drifting trunk stays fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.extraction import precision_probe
from retrieval.extraction.extract import extract_descriptors
from retrieval.extraction.inference import resolve_precision
from retrieval.models.net import build_net


@pytest.fixture
def photos(shared_data: Path) -> list[Path]:
    """Six INRIA Holidays photos from different scenes."""
    return sorted((shared_data / "holidays805" / "jpg").glob("*.jpg"))[::130][:6]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_bf16_descriptors_of_photos_stay_at_cosine_0_9999(photos: list[Path], backbone: str):
    net = build_net(backbone, "gem", weights="none")
    options = dict(max_side=320, scales=(1.0, 0.5), channels_last=True, progress=False)
    fp32 = extract_descriptors(net, photos, precision="fp32", **options)
    bf16 = extract_descriptors(net, photos, precision="bf16", **options)
    assert np.abs(fp32 - bf16).max() > 0  # autocast did run in bf16
    assert (fp32 * bf16).sum(1).min() >= 0.9999


def test_auto_refuses_bf16_for_a_trunk_that_drifts(tmp_path: Path, monkeypatch):
    """ImageNet EfficientNet-Lite0 in bf16 is at cosine ~0.9997: fp32 even where bf16 is 2x."""
    try:
        net = build_net("efficientnet_lite0", "gem", weights="imagenet")
    except (OSError, RuntimeError, ValueError) as err:
        pytest.skip(f"ImageNet EfficientNet-Lite0 weights unavailable offline: {err}")
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path))
    precision_probe.forget()
    twice_as_fast = lambda precision, call: {"fp32": 1.0, "bf16": 0.5}[precision]  # noqa: E731
    assert resolve_precision("auto", "cpu", net, timer=twice_as_fast) == "fp32"
    (stored,) = (tmp_path / "precision").glob("*.json")
    assert "cosine" in stored.read_text() and "efficientnet_lite0" in stored.read_text()
    precision_probe.forget()
