"""RetrievalNet: descriptors, masks for padded batches, the multi-scale exponent, neural codes."""

import pytest
import torch
import torch.nn.functional as F

from retrieval.data.transforms import pad_batch
from retrieval.models.net import build_net, embed_images


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_net("resnet18", "gem", whitening=64).eval()


def test_descriptors_are_unit_rows_of_meta_dimension(net):
    x = torch.rand(3, 3, 64, 80)
    d = net(x)
    assert d.shape == (3, 64) == (3, net.meta["out_dim"])
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3))


def test_gem_descriptor_matches_direct_computation(net):
    x = torch.rand(2, 3, 64, 64)
    fmap = net.backbone(x)
    p = net.pooling.p.detach()
    gem = fmap.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)
    expected = F.normalize(net.whitening(F.normalize(gem, dim=1)), dim=1)
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)


def test_padded_batch_masks_padding_like_pooling_alone(net):
    images = [torch.rand(3, 64, 96), torch.rand(3, 96, 64)]
    batch, sizes = pad_batch(images)
    padded = net(batch, sizes)
    # The mask removes the padded part of the feature map; features inside differ only by the
    # padding's influence through the receptive field, so compare pooled features directly.
    fmap = net.backbone(batch)
    mask = net.feature_mask(sizes, tuple(fmap.shape[-2:]))
    for i, img in enumerate(images):
        fh, fw = net.backbone.feature_size(*img.shape[-2:])
        assert mask[i].sum() == fh * fw and mask[i, :fh, :fw].all()
        alone = net.whiten(net.pool(fmap[i : i + 1, :, :fh, :fw]))
        torch.testing.assert_close(padded[i : i + 1], alone, rtol=1e-5, atol=1e-5)


def test_embed_images_equals_one_by_one_with_gradients(net):
    torch.manual_seed(1)
    images = [torch.rand(3, 48, 64), torch.rand(3, 64, 48), torch.rand(3, 48, 64)]
    target = torch.randn(3, net.out_dim)
    net.zero_grad()
    (embed_images(net, images) * target).sum().backward()
    batched = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    alone = torch.cat([net(img[None]) for img in images])
    (alone * target).sum().backward()
    single = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    torch.testing.assert_close(embed_images(net, images), alone, rtol=1e-5, atol=1e-6)
    for a, b in zip(batched, single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_multiscale_exponent_is_the_pooling_one_without_whitening(net):
    plain = build_net("resnet18", "gem")
    with torch.no_grad():
        plain.pooling.p.fill_(2.5)
        net.pooling.p.fill_(2.5)
    assert plain.multiscale_exponent() == pytest.approx(2.5)
    assert net.multiscale_exponent() == 1.0  # whitened: the plain mean, as cirtorch


def test_neural_codes_equal_torchvision_alexnet_fc6_at_224():
    torch.manual_seed(0)
    net = build_net("alexnet", "neural_codes", {"layer": "fc6"}).eval()
    x = torch.rand(2, 3, 224, 224)
    # torchvision's own path to fc6, with the same weights: the trunk shares them with the head.
    alexnet = net.backbone.features
    head = net.pooling.head
    linear = next(m for m in head.modules() if isinstance(m, torch.nn.Linear))
    full = torch.nn.functional.adaptive_avg_pool2d(
        torch.nn.functional.max_pool2d(alexnet(x), kernel_size=3, stride=2), (6, 6)
    )
    fc6 = torch.relu(linear(full.flatten(1)))
    torch.testing.assert_close(net(x), F.normalize(fc6, dim=1), rtol=1e-5, atol=1e-6)
