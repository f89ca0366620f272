"""The descriptor cache: hits, misses, corrupt files, network and image-list fingerprints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from retrieval.extraction.cache import cached_extract, extraction_key, network_fingerprint
from retrieval.models.net import build_net

# The key hashes paths as strings: the files need not exist.
IMAGES = [f"/photos/img{i}.png" for i in range(8)]


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net("resnet18", "gem").eval()


def test_cache_hit_skips_work_and_changed_key_recomputes(tmp_path):
    calls = []

    def compute(value: float):
        def fn():
            calls.append(value)
            return np.full((3, 4), value, dtype=np.float32)

        return fn

    key = {"net": "abc", "dataset": "roxford5k", "scales": [1.0, 0.5], "max_side": 1024}
    first = cached_extract(tmp_path, key, compute(1.0))
    second = cached_extract(tmp_path, dict(key), compute(2.0))
    assert calls == [1.0]
    np.testing.assert_array_equal(second, first)
    changed = cached_extract(tmp_path, {**key, "max_side": 512}, compute(3.0))
    assert calls == [1.0, 3.0] and changed[0, 0] == 3.0
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".npy", ".npy"]


def test_corrupt_cache_file_is_recomputed(tmp_path):
    key = {"dataset": "toy"}
    cached_extract(tmp_path, key, lambda: np.ones((2, 2), dtype=np.float32))
    next(tmp_path.glob("*.npy")).write_bytes(b"not an npy file")
    out = cached_extract(tmp_path, key, lambda: np.zeros((2, 2), dtype=np.float32))
    np.testing.assert_array_equal(out, np.zeros((2, 2)))
    np.testing.assert_array_equal(np.load(next(tmp_path.glob("*.npy"))), np.zeros((2, 2)))


def test_network_fingerprint_tracks_weights(net):
    twin = copy.deepcopy(net)
    assert network_fingerprint(twin) == network_fingerprint(net)
    with torch.no_grad():
        twin.pooling.p.add_(0.1)
    assert network_fingerprint(twin) != network_fingerprint(net)


def test_extraction_key_changes_with_settings(net):
    images = IMAGES
    base = extraction_key(net, "toy", images, max_side=64, scales=(1.0,), precision="fp32")
    assert base == extraction_key(net, "toy", images, max_side=64, scales=[1.0], precision="fp32")
    reordered = extraction_key(
        net, "toy", images[::-1], max_side=64, scales=(1.0,), precision="fp32"
    )
    assert reordered != base
    assert base != extraction_key(net, "toy", images, max_side=64, scales=(1.0,), precision="bf16")
    boxed = extraction_key(net, "toy", images, boxes=[(0, 0, 5, 5)] + [None] * 7, max_side=64)
    assert boxed["images"] != base["images"]


def test_the_key_names_the_image_loader_version(net):
    """Descriptors cached by an older image loader (16-bit PNGs read as white) are not reused."""
    from retrieval.extraction import cache

    key = extraction_key(net, "toy", IMAGES, max_side=64)
    assert key["loader"] == cache.LOADER_VERSION == 3
