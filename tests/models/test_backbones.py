"""Tests for the backbone registry, weight loading and EfficientNet-Lite0."""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from retrieval.models.backbones import BACKBONES, build_backbone
from retrieval.models.efficientnet_lite import EfficientNetLite0, SameConv2d, pretrained_lite0_path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SMALL = [n for n in BACKBONES if n not in ("resnet101", "resnet152")]
RESNET18_FILE = "resnet18-f37072fd.pth"


def _randomize_bn_stats(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial running stats so eval-mode outputs depend on them."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


def test_registry_lists_required_backbones() -> None:
    required = {
        "alexnet",
        "vgg16",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "densenet121",
        "efficientnet_b0",
        "convnext_tiny",
        "efficientnet_lite0",
    }
    assert required <= set(BACKBONES)


@pytest.mark.parametrize("name", SMALL)
def test_out_dim_non_negative_and_feature_size(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        for h, w in [(67, 93), (101, 75)]:
            out = backbone(3 * torch.randn(2, 3, h, w))
            assert out.shape[:2] == (2, backbone.out_dim)
            assert backbone.feature_size(h, w) == tuple(out.shape[-2:])
            assert out.min() >= 0
            assert out.max() > 0
    assert backbone.name == name
    assert len(backbone.mean) == len(backbone.std) == 3


@pytest.mark.parametrize("name", ["resnet101", "resnet152"])
def test_big_resnets_on_meta_device(name: str) -> None:
    with torch.device("meta"):
        backbone = build_backbone(name)
    out = backbone(torch.empty(1, 3, 64, 64, device="meta"))
    assert out.shape[1] == backbone.out_dim == 2048
    assert backbone.feature_size(224, 224) == (7, 7)


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        ("resnet50", (224, 224), (7, 7)),
        # 225 -> conv1 113 -> maxpool 57 -> layer2 29 -> layer3 15 -> layer4 8
        ("resnet50", (225, 224), (8, 7)),
        ("alexnet", (224, 224), (13, 13)),  # conv5 before the dropped pool
        ("vgg16", (224, 224), (14, 14)),
        ("efficientnet_lite0", (225, 257), (8, 9)),  # TF "same": ceil(n / 32)
    ],
)
def test_feature_size_hand_computed(name: str, size: tuple, expected: tuple) -> None:
    with torch.device("meta"):
        backbone = build_backbone(name)
    assert backbone.feature_size(*size) == expected


def test_feature_size_too_small_and_bad_input_are_clear() -> None:
    backbone = build_backbone("alexnet")
    with pytest.raises(ValueError, match="a 16 x 16 image is too small for backbone 'alexnet'"):
        backbone.feature_size(16, 16)
    with pytest.raises(ValueError, match=r"B x 3 x H x W.*\(3, 64, 64\)"):
        backbone(torch.zeros(3, 64, 64))


def test_same_conv_pads_like_tensorflow() -> None:
    conv = SameConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # TF pads 0 rows/cols before and 1 after: windows x[0:3,0:3], x[0:3,2:4], x[2:4,0:3], x[2:4,2:4]
    expected = torch.tensor([[45.0, 39.0], [66.0, 50.0]])
    assert torch.equal(conv(x)[0, 0], expected)


def test_torchvision_layout_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    _randomize_bn_stats(tv)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    backbone = build_backbone("resnet18", str(tmp_path / "r18.pth")).eval()
    tv.eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(y))))
        assert torch.allclose(backbone(x), expected, atol=1e-6)


def test_old_densenet_key_names_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.densenet121()
    _randomize_bn_stats(tv)
    old = {}
    for key, value in tv.state_dict().items():
        for part in ("norm1", "norm2", "conv1", "conv2"):
            key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        old[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, tmp_path / "densenet.pth")
    backbone = build_backbone("densenet121", str(tmp_path / "densenet.pth")).eval()
    tv.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x), F.relu(tv.features(x)), atol=1e-5)


@pytest.mark.parametrize("form", ["checkpoint", "bare"])
def test_cirtorch_layout_round_trip(tmp_path: Path, form: str) -> None:
    torch.manual_seed(0)
    source = build_backbone("resnet18")
    _randomize_bn_stats(source)
    trunk = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    # Checkpoints from old torch have no BatchNorm batch counters.
    trunk = {k: v for k, v in trunk.items() if not k.endswith("num_batches_tracked")}
    if form == "checkpoint":
        state = {
            **trunk,
            "pool.p": torch.tensor([3.0]),
            "whiten.weight": torch.randn(512, 512),
            "whiten.bias": torch.randn(512),
        }
        blob = {"epoch": 7, "meta": {"architecture": "resnet18"}, "state_dict": state}
    else:
        blob = trunk
    torch.save(blob, tmp_path / "cirtorch.pth")
    loaded = build_backbone("resnet18", str(tmp_path / "cirtorch.pth")).eval()
    fresh = build_backbone("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source.eval()(x), atol=1e-6)
        assert not torch.allclose(fresh(x), loaded(x))


def test_key_mismatch_names_missing_and_unexpected(tmp_path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    del state["layer1.0.conv1.weight"]
    state["bogus.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as info:
        build_backbone("resnet18", str(tmp_path / "bad.pth"))
    message = str(info.value)
    assert "'resnet18'" in message
    assert "layer1.0.conv1.weight" in message
    assert "bogus.weight" in message
    assert "torchvision" in message


def test_shape_mismatch_names_tensor(tmp_path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"conv1\.weight: file \(64, 3, 3, 3\) vs model"):
        build_backbone("resnet18", str(tmp_path / "bad.pth"))


def test_missing_file_and_unknown_name_are_clear(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_backbone("resnet18", str(missing))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth holds a list, not a state dict"):
        build_backbone("resnet18", str(tmp_path / "list.pth"))
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'.*'resnet18'.*'vgg16'"):
        build_backbone("resnet19")


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under tmp_path where every download fails."""

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise URLError(f"no network for {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_imagenet_offline_error_names_file_and_cache(offline_hub: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        build_backbone("resnet18", "imagenet")
    message = str(info.value)
    assert RESNET18_FILE in message
    assert str(offline_hub) in message
    assert f"https://download.pytorch.org/models/{RESNET18_FILE}" in message


def test_imagenet_loads_from_hub_cache(offline_hub: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    offline_hub.mkdir(parents=True)
    torch.save(state, offline_hub / RESNET18_FILE)
    for weights in ["imagenet", "imagenet:IMAGENET1K_V1"]:
        backbone = build_backbone("resnet18", weights)
        assert torch.equal(backbone.features[0].weight, state["conv1.weight"])
        last_bn = backbone.features[7][1].bn2  # trunk index 7 = layer4
        assert torch.equal(last_bn.running_var, state["layer4.1.bn2.running_var"])
    with pytest.raises(ValueError, match="'imagenet:IMAGENET1K_V1'"):
        build_backbone("resnet18", "imagenet:V9")


def test_classifier_head_reproduces_torchvision_fc6_fc7(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    torch.save(tv.state_dict(), tmp_path / "alexnet.pth")
    backbone = build_backbone("alexnet", str(tmp_path / "alexnet.pth")).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        flat = torch.flatten(tv.avgpool(tv.features(x)), 1)
        fc6 = F.relu(tv.classifier[1](flat))
        fc7 = F.relu(tv.classifier[4](fc6))
        features = backbone(x)
        for layer, expected in [("fc6", fc6), ("fc7", fc7)]:
            head, grid = backbone.classifier_head(layer)
            assert grid == (6, 6)
            got = head(F.adaptive_max_pool2d(features, grid))
            assert torch.allclose(got, expected, atol=1e-5)
    # The head shares (not copies) the classifier weights and stays out of the trunk state dict.
    assert backbone.classifier_head("fc6")[0][1] is backbone.classifier_head("fc7")[0][1]
    assert all(k.startswith("features.") for k in backbone.state_dict())


def test_classifier_head_vgg_grid_and_errors() -> None:
    head, grid = build_backbone("vgg16").classifier_head("fc7")
    assert grid == (7, 7)
    assert head(torch.rand(1, 512, 7, 7)).shape == (1, 4096)
    with pytest.raises(ValueError, match="'fc6' or 'fc7', got 'fc8'"):
        build_backbone("alexnet").classifier_head("fc8")
    with pytest.raises(ValueError, match=r"'resnet18' has no fc6/fc7.*\['alexnet', 'vgg16'\]"):
        build_backbone("resnet18").classifier_head("fc6")


def test_lite0_imagenet_loads_strictly() -> None:
    state = torch.load(pretrained_lite0_path(), map_location="cpu", weights_only=True)
    EfficientNetLite0().load_state_dict(state, strict=True)
    backbone = build_backbone("efficientnet_lite0", "imagenet")
    assert torch.equal(backbone.features._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(backbone.features._bn1.running_mean, state["_bn1.running_mean"])
    assert backbone.out_dim == state["_conv_head.weight"].shape[0]
    with pytest.raises(ValueError, match="single ImageNet checkpoint; use weights='imagenet'"):
        build_backbone("efficientnet_lite0", "imagenet:IMAGENET1K_V1")


def test_lite0_trunk_equals_extract_features() -> None:
    torch.manual_seed(0)
    model = EfficientNetLite0().eval()
    _randomize_bn_stats(model)
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        assert torch.equal(model.trunk()(x), model.extract_features(x))
        assert model(x).shape == (2, 1000)


def _ukbench_first(n: int) -> tuple[torch.Tensor, np.ndarray]:
    """First n UKBench images resized to 299 x 224, as floats in [0, 1], with object ids."""
    root = SHARED_DATA / "ukbench_sample"
    if not (root / "groundtruth.csv").is_file():
        pytest.skip(f"shared UKBench sample not found at {root}")
    with open(root / "groundtruth.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    images = [
        np.asarray(Image.open(root / r["path"]).convert("RGB").resize((299, 224)), np.float32)
        for r in rows
    ]
    batch = torch.from_numpy(np.stack(images) / 255.0).permute(0, 3, 1, 2).float()
    return batch, np.array([int(r["object_id"]) for r in rows])


def _ns_score(backbone: torch.nn.Module, images: torch.Tensor, labels: np.ndarray) -> float:
    """UKBench N-S score: mean count of same-object images in the top 4 (query included)."""
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.no_grad():
        parts = [backbone((chunk - mean) / std).mean((2, 3)) for chunk in images.split(25)]
    desc = F.normalize(torch.cat(parts), dim=1)
    top = (desc @ desc.T).topk(4, dim=1).indices.numpy()
    return float((labels[top] == labels[:, None]).sum(1).mean())


def test_lite0_is_really_pretrained_on_ukbench() -> None:
    images, labels = _ukbench_first(100)
    torch.manual_seed(0)
    pretrained = _ns_score(build_backbone("efficientnet_lite0", "imagenet").eval(), images, labels)
    random_init = _ns_score(build_backbone("efficientnet_lite0").eval(), images, labels)
    # Measured: 3.96 pretrained; 2.68-2.95 for random init (seeds 0-2): colour alone scores
    # about 2.5 on these 25 objects, so random features are far from chance (1.0).
    assert pretrained > 3.7
    assert random_init < 3.2


# --------------------------------------------------------------------------------------------------
# weights="cirtorch": cirtorch's Caffe-converted ImageNet trunks
# --------------------------------------------------------------------------------------------------


def test_cirtorch_offline_error_names_file_and_folder(offline_hub: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        build_backbone("resnet101", "cirtorch")
    message = str(info.value)
    name = "imagenet-caffe-resnet101-features-10a101d.pth"
    assert f"weights {name} for backbone 'resnet101' are not in {offline_hub} " in message
    assert f"save it in {offline_hub}" in message
    assert f"networks/imagenet/{name}" in message and "TORCH_HOME" in message


def test_cirtorch_weights_only_for_its_four_trunks() -> None:
    with pytest.raises(ValueError, match=r"'resnet18' has no cirtorch.*\['resnet101', 'resnet152'"):
        build_backbone("resnet18", "cirtorch")


def _caffe_style_file(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """A trunk state dict in the layout of cirtorch's imagenet-caffe files: cirtorch's
    ``net.features`` (children of torchvision's resnet but avgpool/fc) without batch counters."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    _randomize_bn_stats(model)
    features = torch.nn.Sequential(*list(model.children())[:-2])
    state = {k: v for k, v in features.state_dict().items() if "num_batches" not in k}
    torch.save(state, path)
    return state


def test_cirtorch_weights_download_once_and_load(
    offline_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval.models import cirtorch_weights

    name = "imagenet-caffe-resnet18-features-0000000.pth"
    monkeypatch.setitem(cirtorch_weights.CIRTORCH_FEATURES, "resnet18", name)
    served = tmp_path / "server.pth"
    state = _caffe_style_file(served, seed=3)
    fetched = []

    def serve(url: str, dst: str, **kwargs: object) -> None:
        fetched.append(url)
        Path(dst).write_bytes(served.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", serve)
    for _ in range(2):
        backbone = build_backbone("resnet18", "cirtorch")
        assert torch.equal(backbone.features[0].weight, state["0.weight"])
        assert torch.equal(backbone.features[7][1].bn2.running_var, state["7.1.bn2.running_var"])
    assert fetched == [f"http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/imagenet/{name}"]
    assert (offline_hub / name).is_file()


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "resnet101", "resnet152"])
def test_cirtorch_files_fit_our_trunks_key_for_key(name: str) -> None:
    # cirtorch's features: VGG's conv layers but the last max-pool, ResNet's children but avgpool
    # and fc; its files are their state dicts, so our trunk must have exactly those keys.
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
        backbone = build_backbone(name)
    children = list(model.features.children())[:-1] if name == "vgg16" else None
    cut = children if children is not None else list(model.children())[:-2]
    cirtorch = torch.nn.Sequential(*cut).state_dict()
    ours = backbone.features.state_dict()
    assert list(ours) == list(cirtorch)
    assert all(ours[k].shape == cirtorch[k].shape for k in ours)
