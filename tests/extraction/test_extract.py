"""Descriptor extraction: batching, multi-scale, query boxes, precision and sharding."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from retrieval.data.transforms import pad_batch, prepare_image
from retrieval.extraction.extract import (
    bucket_batches,
    extract_descriptors,
    extract_distributed,
    merge_shards,
    multiscale_power,
    padded_batches,
    prepared_size,
    shard_range,
)
from retrieval.models.net import build_net

MAX_SIDE = 64
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# (width, height); 96 x 72 shrinks to 64 x 48 and so joins that bucket.
SIZES = [(64, 48), (48, 64), (64, 48), (40, 40), (96, 72), (48, 64), (50, 30), (64, 48)]


def _smooth_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth random photo-like image (low-frequency colour blobs plus a little noise)."""
    coarse = Image.fromarray(rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    img = img + rng.integers(-10, 11, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(SIZES):
        path = root / f"img{i}.png"
        _smooth_image(rng, w, h).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net("resnet18", "gem").eval()


def _one_by_one(net, paths, max_side=MAX_SIDE, boxes=None) -> np.ndarray:
    """Reference: each image prepared and forwarded alone."""
    boxes = boxes or [None] * len(paths)
    rows = []
    with torch.no_grad():
        for path, box in zip(paths, boxes, strict=True):
            x = prepare_image(path, max_side, net.meta["mean"], net.meta["std"], box=box)
            rows.append(net(x[None])[0].numpy())
    return np.stack(rows)


def test_bucket_batches_group_identical_sizes_in_first_seen_order():
    sizes = [(4, 3), (3, 4), (4, 3), (2, 2), (4, 3), (3, 4)]
    assert bucket_batches(sizes, 2) == [[0, 2], [4], [1, 5], [3]]


def test_padded_batches_sort_by_aspect_ratio_then_area():
    sizes = [(4, 3), (3, 4), (8, 6), (2, 2)]  # (h, w): ratios 1.33, 0.75, 1.33, 1
    assert padded_batches(sizes, 3) == [[1, 3, 0], [2]]


def test_prepared_size_predicts_prepare_image(images, net):
    box = (10.4, 5.6, 40.5, 30.2)
    for path in images:
        for b in (None, box):
            x = prepare_image(path, MAX_SIDE, net.meta["mean"], net.meta["std"], box=b)
            assert prepared_size(path, MAX_SIDE, b) == tuple(x.shape[1:])
    assert prepared_size(images[4], MAX_SIDE) == (48, 64)


@pytest.mark.skipif(not (DATA / "ukbench_sample").is_dir(), reason="no shared ukbench_sample data")
def test_prepared_size_predicts_prepare_image_on_real_jpegs():
    paths = sorted((DATA / "ukbench_sample" / "images").glob("*.jpg"))[:12]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    for path, box in zip(paths, [None, (20.5, 10.2, 200.7, 170.4)] * 6, strict=True):
        x = prepare_image(path, 150, mean, std, box=box)
        assert prepared_size(path, 150, box) == tuple(x.shape[1:])


def test_bucket_extraction_equals_one_by_one_in_order(images, net):
    out = extract_descriptors(net, images, MAX_SIDE, batch_size=3, progress=False)
    assert out.shape == (len(images), 512) and out.dtype == np.float32
    np.testing.assert_allclose(out, _one_by_one(net, images), atol=1e-5)
    assert not net.training  # mode restored (was eval)


def test_extraction_restores_training_mode(images):
    torch.manual_seed(1)
    training_net = build_net("resnet18", "gem").train()
    extract_descriptors(training_net, images[:2], MAX_SIDE, progress=False)
    assert training_net.training


def test_pad_extraction_is_masked_padded_forward_close_to_one_by_one(net, tmp_path):
    rng = np.random.default_rng(1)
    # Feature maps (stride 32) of 4 x 3, 3 x 4, 2 x 4 ...: the masks differ within a batch.
    shapes = [(128, 96), (128, 80), (128, 64), (96, 128), (64, 128), (128, 120)]
    paths = []
    for i, (w, h) in enumerate(shapes):
        paths.append(tmp_path / f"pad{i}.png")
        _smooth_image(rng, w, h).save(paths[-1])
    sizes = [prepared_size(p, 128) for p in paths]
    batches = padded_batches(sizes, 3)
    assert all(len({sizes[i] for i in b}) > 1 for b in batches)  # padding really happens
    out = extract_descriptors(net, paths, 128, batch_size=3, batching="pad", progress=False)

    # Exactly the masked forward of each padded batch, rows back in the original order.
    mean, std = net.meta["mean"], net.meta["std"]
    expected = np.empty_like(out)
    with torch.no_grad():
        for b in batches:
            batch, image_sizes = pad_batch([prepare_image(paths[i], 128, mean, std) for i in b])
            expected[b] = net(batch, image_sizes).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)

    # Only close to one-by-one: border convolutions see the padding. Measured with this seeded
    # random resnet18 at 128 px: min cosine 0.961 (0.998 at 512 px); at 64 px it drops to ~0.89.
    cos = (out * _one_by_one(net, paths, max_side=128)).sum(axis=1)
    assert cos.min() > 0.95, f"min cosine to one-by-one {cos.min():.4f}"


def test_multiscale_matches_loop_with_gem_p(images, net):
    gem_net = copy.deepcopy(net)
    with torch.no_grad():
        gem_net.pooling.p.fill_(2.5)
    scales = (1.0, 1 / math.sqrt(2), 0.5)
    assert multiscale_power(gem_net, 3) == pytest.approx(2.5)
    assert multiscale_power(gem_net, 1) == 1.0
    out = extract_descriptors(gem_net, images, MAX_SIDE, scales=scales, progress=False)

    expected, mean_only = [], []
    with torch.no_grad():
        for path in images:
            x = prepare_image(path, MAX_SIDE, net.meta["mean"], net.meta["std"])[None]
            ds = []
            for s in scales:
                xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
                ds.append(gem_net(xs)[0])
            ds = torch.stack(ds)
            expected.append(F.normalize(ds.pow(2.5).mean(0).pow(1 / 2.5), dim=0).numpy())
            mean_only.append(F.normalize(ds.mean(0), dim=0).numpy())
    np.testing.assert_allclose(out, np.stack(expected), atol=1e-5)
    assert np.abs(out - np.stack(mean_only)).max() > 1e-4  # p really changes the aggregation


def test_multiscale_power_is_one_without_gem():
    assert multiscale_power(build_net("resnet18", "mac"), 3) == 1.0


def test_query_box_equals_precropped_file(images, net, tmp_path):
    box = (10.4, 20.2, 70.6, 60.0)  # on the 96 x 72 image; rounds to (10, 20, 71, 60): 61 x 40
    crop_path = tmp_path / "crop.png"
    Image.open(images[4]).crop((10, 20, 71, 60)).save(crop_path)
    # v1.2 rule: the crop is resized with max_side * 61 / 96 = 40.67, floored by thumbnail -> 40
    # (61 x 40 -> 40 x 26: 26 keeps the aspect ratio 1.525 closer than 27).
    crop_side = 40
    assert prepared_size(images[4], MAX_SIDE, box) == (26, 40)

    with_box = extract_descriptors(
        net, [images[4], images[0]], MAX_SIDE, boxes=[box, None], progress=False
    )
    precropped = extract_descriptors(net, [crop_path], crop_side, progress=False)
    np.testing.assert_allclose(with_box[0], precropped[0], atol=1e-5)
    whole = extract_descriptors(net, [images[4]], MAX_SIDE, progress=False)
    assert np.abs(with_box[0] - whole[0]).max() > 1e-3  # the box really crops
    np.testing.assert_allclose(with_box[1], _one_by_one(net, [images[0]])[0], atol=1e-5)


def test_bf16_close_to_fp32(images, net):
    fp32 = extract_descriptors(net, images, MAX_SIDE, progress=False)
    bf16 = extract_descriptors(net, images, MAX_SIDE, precision="bf16", progress=False)
    assert bf16.dtype == np.float32
    cos = (fp32 * bf16).sum(axis=1)
    assert cos.min() >= 0.99
    assert np.abs(fp32 - bf16).max() > 0  # autocast did run in lower precision


def test_channels_last_equals_default(images, net):
    out = extract_descriptors(net, images[:3], MAX_SIDE, channels_last=True, progress=False)
    np.testing.assert_allclose(out, _one_by_one(net, images[:3]), atol=1e-5)
    assert net.backbone is not None
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # layout restored


def test_empty_list_and_bad_options(net):
    assert extract_descriptors(net, [], MAX_SIDE, progress=False).shape == (0, 512)
    with pytest.raises(ValueError, match="batching"):
        extract_descriptors(net, [], MAX_SIDE, batching="sorted")
    with pytest.raises(ValueError, match="precision"):
        extract_descriptors(net, [], MAX_SIDE, precision="fp8")


def test_shard_ranges_partition_contiguously():
    ranges = [shard_range(8, r, 3) for r in range(3)]
    assert ranges == [(0, 2), (2, 5), (5, 8)]
    with pytest.raises(ValueError):
        shard_range(8, 3, 3)


def test_sharded_extraction_reassembles_to_unsharded(images, net):
    full = extract_descriptors(net, images, MAX_SIDE, batch_size=2, progress=False)
    boxes = [None] * len(images)
    parts = [
        extract_descriptors(
            net, images, MAX_SIDE, boxes=boxes, batch_size=2, shard=(r, 3), progress=False
        )
        for r in range(3)
    ]
    assert [len(p) for p in parts] == [2, 3, 3]
    np.testing.assert_allclose(merge_shards(parts, len(images)), full, atol=1e-6)
    with pytest.raises(ValueError):
        merge_shards(parts[:2], len(images))


def test_extract_distributed_single_process_group(images, net, tmp_path):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        out = extract_distributed(net, images[:3], max_side=MAX_SIDE, progress=False)
    finally:
        dist.destroy_process_group()
    np.testing.assert_allclose(out, _one_by_one(net, images[:3]), atol=1e-5)


def test_extraction_keeps_frozen_batchnorm_frozen(images):
    # Training freezes BatchNorm (eval mode inside a net in train mode); mining must not undo it.
    net = build_net("resnet18", "gem").train()
    batchnorms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.eval()
    extract_descriptors(net, images[:2], MAX_SIDE, progress=False)
    assert net.training and net.backbone.training
    assert not any(bn.training for bn in batchnorms)


def test_threaded_loading_keeps_order_and_values(images, net):
    sequential = extract_descriptors(net, images, MAX_SIDE, batch_size=2, progress=False)
    threaded = extract_descriptors(
        net, images, MAX_SIDE, batch_size=2, num_workers=3, progress=False
    )
    np.testing.assert_array_equal(threaded, sequential)


def test_bad_image_files_are_named_on_the_extraction_path(images, net, tmp_path, monkeypatch):
    empty, text = tmp_path / "empty.jpg", tmp_path / "notes.png"
    empty.write_bytes(b"")
    text.write_text("not an image")
    for bad in (empty, text):
        with pytest.raises(ValueError, match=rf"Corrupt or unreadable image: .*{bad.name}.*remove"):
            extract_descriptors(net, [images[0], bad], MAX_SIDE, progress=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3100)  # 96 x 72 > 2 x 3100: a "bomb"
    with pytest.raises(ValueError, match=r"too large.*img4\.png.*MAX_IMAGE_PIXELS"):
        extract_descriptors(net, [images[0], images[4]], MAX_SIDE, progress=False)


def test_ground_truth_box_beyond_the_image_is_clipped(images, net):
    # A 12000 px box on the 64 x 48 image: the whole image, not a 12000 x 12000 black canvas.
    assert prepared_size(images[0], MAX_SIDE, (0, 0, 12000, 12000)) == (48, 64)
    boxed = extract_descriptors(
        net, [images[0]], MAX_SIDE, boxes=[(0, 0, 12000, 12000)], progress=False
    )
    whole = extract_descriptors(net, [images[0]], MAX_SIDE, progress=False)
    np.testing.assert_allclose(boxed, whole, atol=1e-6)
    with pytest.raises(ValueError, match="outside the 64 x 48 image"):
        extract_descriptors(net, [images[0]], MAX_SIDE, boxes=[(100, 0, 200, 9)], progress=False)
