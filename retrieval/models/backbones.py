"""Registry of CNN trunks: B x 3 x H x W images to non-negative B x C x h x w feature maps."""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torch.func import functional_call

from retrieval.models.cirtorch_weights import load_cirtorch_features
from retrieval.models.efficientnet_lite import (
    LITE0_MEAN,
    LITE0_STD,
    EfficientNetLite0,
    pretrained_lite0_path,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Keys of a cirtorch checkpoint that belong to the pooling / whitening, not to the trunk.
_NON_TRUNK_PREFIXES = ("pool.", "whiten.", "lwhiten.")
_SHOW_KEYS = 5


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: the full classifier, where to cut it, and its constants."""

    build: Callable[[], nn.Module]  # full ImageNet classifier, random init
    cut: Callable[[nn.Module], nn.Sequential]  # trunk sharing the classifier's modules
    out_dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_enum: str | None = None  # torchvision weights enum, e.g. "ResNet50_Weights"
    local_imagenet: Callable[[], Path] | None = None  # ImageNet file installed with a package
    classifier: Callable[[nn.Module], nn.Sequential] | None = None  # fc layers, for Neural Codes
    head_grid: tuple[int, int] | None = None  # adaptive-pool grid the classifier expects
    fix_keys: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None


def _torchvision(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, weights=None, **kwargs)


# Stochastic depth is off: the descriptors of a tuple must come from one deterministic network
# (as cirtorch's), and a batched forward must equal one image at a time.
_NO_STOCHASTIC_DEPTH = {"stochastic_depth_prob": 0.0}


def _cut_last_maxpool(model: nn.Module) -> nn.Sequential:
    """AlexNet / VGG: keep conv layers up to the last ReLU, drop the final MaxPool (as cirtorch)."""
    layers = list(model.features.children())
    assert isinstance(layers[-1], nn.MaxPool2d)
    return nn.Sequential(*layers[:-1])


def _cut_resnet(model: nn.Module) -> nn.Sequential:
    """ResNet: everything before the global avgpool and fc; layer4 already ends in ReLU."""
    return nn.Sequential(*list(model.children())[:-2])


def _cut_features_relu(model: nn.Module) -> nn.Sequential:
    """`model.features` followed by a ReLU, for trunks whose last op can output negatives.

    DenseNet ends in BatchNorm, ConvNeXt in a residual sum and torchvision EfficientNet in SiLU
    (minimum about -0.28). ReLU (i.e. clamp at 0) makes the map non-negative, which GeM
    (x ** p) needs and MAC/SPoC/R-MAC/CroW assume; it only cuts off small negative responses.
    Not in-place, so autograd never sees the preceding op's output overwritten.
    """
    return nn.Sequential(*model.features.children(), nn.ReLU())


def _classifier(model: nn.Module) -> nn.Sequential:
    return model.classifier


def _cut_lite(model: nn.Module) -> nn.Sequential:
    return model.trunk()


_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _fix_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old torchvision DenseNet keys ('norm.1.weight') to current ones ('norm1.weight')."""
    fixed = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed


BACKBONES: dict[str, BackboneSpec] = {
    "alexnet": BackboneSpec(
        _torchvision("alexnet"),
        _cut_last_maxpool,
        256,
        weights_enum="AlexNet_Weights",
        classifier=_classifier,
        head_grid=(6, 6),
    ),
    "vgg16": BackboneSpec(
        _torchvision("vgg16"),
        _cut_last_maxpool,
        512,
        weights_enum="VGG16_Weights",
        classifier=_classifier,
        head_grid=(7, 7),
    ),
    **{
        name: BackboneSpec(_torchvision(name), _cut_resnet, dim, weights_enum=enum)
        for name, dim, enum in [
            ("resnet18", 512, "ResNet18_Weights"),
            ("resnet34", 512, "ResNet34_Weights"),
            ("resnet50", 2048, "ResNet50_Weights"),
            ("resnet101", 2048, "ResNet101_Weights"),
            ("resnet152", 2048, "ResNet152_Weights"),
        ]
    },
    "densenet121": BackboneSpec(
        _torchvision("densenet121"),
        _cut_features_relu,
        1024,
        weights_enum="DenseNet121_Weights",
        fix_keys=_fix_densenet_keys,
    ),
    "efficientnet_b0": BackboneSpec(
        _torchvision("efficientnet_b0", **_NO_STOCHASTIC_DEPTH),
        _cut_features_relu,
        1280,
        weights_enum="EfficientNet_B0_Weights",
    ),
    "convnext_tiny": BackboneSpec(
        _torchvision("convnext_tiny", **_NO_STOCHASTIC_DEPTH),
        _cut_features_relu,
        768,
        weights_enum="ConvNeXt_Tiny_Weights",
    ),
    "efficientnet_lite0": BackboneSpec(
        lambda: EfficientNetLite0(drop_connect_rate=0.0),
        _cut_lite,
        1280,
        mean=LITE0_MEAN,
        std=LITE0_STD,
        local_imagenet=pretrained_lite0_path,
    ),
}


class Backbone(nn.Module):
    """A CNN trunk: B x 3 x H x W images -> non-negative B x out_dim x h x w feature maps."""

    def __init__(
        self,
        name: str,
        features: nn.Sequential,
        out_dim: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        classifier: nn.Sequential | None = None,
        head_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.features = features
        self.out_dim = out_dim
        self.mean = tuple(mean)
        self.std = tuple(std)
        # Stored outside the module tree: the trunk's state dict stays cirtorch-compatible and
        # the fc weights only join a network (and its checkpoints) through classifier_head().
        self.__dict__["_classifier"] = classifier
        self._head_grid = head_grid
        self._size_cache: dict[tuple[int, int], tuple[int, int]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the B x out_dim x h x w feature map of a B x 3 x H x W batch."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"backbone '{self.name}' expects a B x 3 x H x W image batch, "
                f"got shape {tuple(x.shape)}; add a batch dimension or convert images to RGB."
            )
        return self.features(x)

    def feature_size(self, h: int, w: int) -> tuple[int, int]:
        """Exact (h', w') of the feature map for an h x w input, found by a shape-only run."""
        key = (int(h), int(w))
        if key not in self._size_cache:
            if key[0] < 1 or key[1] < 1:
                raise ValueError(f"image size must be positive, got {key[0]} x {key[1]}")
            tensors = chain(self.features.named_parameters(), self.features.named_buffers())
            meta = {k: torch.empty_like(v, device="meta") for k, v in tensors}
            # Batch of 2: train-mode BatchNorm rejects a single value per channel.
            x = torch.empty(2, 3, *key, device="meta")
            too_small = f"a {key[0]} x {key[1]} image is too small for backbone '{self.name}'"
            try:
                out = functional_call(self.features, meta, (x,))
            except RuntimeError as err:
                raise ValueError(f"{too_small}: {err}") from err
            if out.shape[-2] < 1 or out.shape[-1] < 1:
                raise ValueError(f"{too_small}: empty {tuple(out.shape[-2:])} feature map")
            self._size_cache[key] = (int(out.shape[-2]), int(out.shape[-1]))
        return self._size_cache[key]

    def classifier_head(self, layer: str) -> tuple[nn.Module, tuple[int, int]]:
        """fc6 or fc7 head (Linear+ReLU, no dropout) sharing the classifier's weights, and its grid.

        The head maps a B x C x gh x gw map (or its flattened B x C*gh*gw form) to B x 4096.
        The trunk omits the final MaxPool, so feed it adaptive_max_pool2d(features, grid): at
        224 px this equals torchvision's MaxPool + AdaptiveAvgPool exactly.
        """
        classifier = self.__dict__["_classifier"]
        if classifier is None or self._head_grid is None:
            with_head = sorted(n for n, s in BACKBONES.items() if s.classifier is not None)
            raise ValueError(
                f"backbone '{self.name}' has no fc6/fc7 classifier; Neural Codes need one of "
                f"{with_head}."
            )
        linears = [m for m in classifier if isinstance(m, nn.Linear)]
        if layer == "fc6":
            head = nn.Sequential(nn.Flatten(1), linears[0], nn.ReLU())
        elif layer == "fc7":
            head = nn.Sequential(nn.Flatten(1), linears[0], nn.ReLU(), linears[1], nn.ReLU())
        else:
            raise ValueError(f"classifier layer must be 'fc6' or 'fc7', got {layer!r}")
        return head, self._head_grid


def build_backbone(name: str, weights: str = "none") -> Backbone:
    """Build backbone `name` with weights "none", "imagenet[:MEMBER]", "cirtorch" (the Caffe
    ImageNet trunks cirtorch starts from: vgg16, resnet50/101/152) or a state-dict path."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    state = _resolve_weights(name, spec, weights)
    full = spec.build()
    trunk = spec.cut(full)
    if state is not None:
        _load_state(name, spec, full, trunk, state)
    classifier = spec.classifier(full) if spec.classifier else None
    return Backbone(name, trunk, spec.out_dim, spec.mean, spec.std, classifier, spec.head_grid)


def _resolve_weights(name: str, spec: BackboneSpec, weights: str) -> Mapping | None:
    """Turn the weights argument into a loaded state dict (None for random init)."""
    if weights == "none":
        return None
    if weights == "cirtorch":  # the trunk alone, as cirtorch's net.features
        return {f"features.{k}": v for k, v in load_cirtorch_features(name).items()}
    if weights == "imagenet" or weights.startswith("imagenet:"):
        member = weights.partition(":")[2] or "DEFAULT"
        if spec.local_imagenet is not None:
            if member != "DEFAULT":
                raise ValueError(
                    f"backbone '{name}' has a single ImageNet checkpoint; use weights='imagenet'"
                )
            return torch.load(spec.local_imagenet(), map_location="cpu", weights_only=True)
        return _torchvision_imagenet(name, spec, member)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file for backbone '{name}' not found: {path}; pass an existing state-dict "
            "path, 'imagenet', 'cirtorch' or 'none'."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"cannot read a state dict for backbone '{name}' from {path}: {err}; save tensors with "
            "torch.save(model.state_dict(), path) rather than a pickled model."
        ) from err
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{path} holds a {type(state).__name__}, not a state dict, for backbone '{name}'"
        )
    return state


def _torchvision_imagenet(name: str, spec: BackboneSpec, member: str) -> Mapping:
    """Fetch torchvision ImageNet weights from the hub cache, downloading them if online."""
    if spec.weights_enum is None:
        raise ValueError(f"backbone '{name}' has no torchvision ImageNet weights")
    enum = getattr(torchvision.models, spec.weights_enum)
    try:
        chosen = enum.DEFAULT if member == "DEFAULT" else enum[member]
    except KeyError:
        options = ["DEFAULT", *enum.__members__]
        raise ValueError(
            f"unknown ImageNet weights {member!r} for backbone '{name}'; choose one of "
            f"{['imagenet:' + m for m in options]}"
        ) from None
    file_name = os.path.basename(urlparse(chosen.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        return torch.hub.load_state_dict_from_url(
            chosen.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except OSError as err:  # URLError, HTTPError, timeouts, connection errors
        raise RuntimeError(
            f"ImageNet weights {file_name} for backbone '{name}' are not in the torch hub cache "
            f"and could not be downloaded ({err}). Fetch {chosen.url} and save it as {cached} "
            f"(cache folder {cached.parent}, set TORCH_HOME to move it), or use weights='none' "
            "or a local state-dict path."
        ) from err


def _load_state(
    name: str, spec: BackboneSpec, full: nn.Module, trunk: nn.Sequential, state: Mapping
) -> None:
    """Load a torchvision-layout (full model) or cirtorch-layout (features.*) state dict."""
    if isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # cirtorch checkpoint: {"epoch", "meta", "state_dict", ...}
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if spec.fix_keys is not None:
        state = spec.fix_keys(state)
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    other = [k for k in state if not k.startswith(("features.", *_NON_TRUNK_PREFIXES))]
    candidates = [
        ("torchvision", full, state, []),
        ("cirtorch", trunk, features, other),
    ]
    results = []
    for layout, module, given, extra in candidates:
        given = _with_batch_counters(module, given)
        expected = module.state_dict()
        missing = [k for k in expected if k not in given]
        unexpected = extra + [k for k in given if k not in expected]
        if not missing and not unexpected:
            _check_shapes(name, layout, expected, given)
            module.load_state_dict(given, strict=True)
            log.info("loaded %s-layout weights into backbone '%s'", layout, name)
            if layout == "cirtorch" and spec.classifier is not None:
                log.info("backbone '%s': the file has no fc layers, fc6/fc7 stay random", name)
            return
        overlap = len(expected) - len(missing)
        results.append((overlap, layout, missing, unexpected))
    _, layout, missing, unexpected = max(results, key=lambda r: r[0])
    raise ValueError(
        f"state dict does not fit backbone '{name}' (closest layout: {layout}); "
        f"{len(missing)} missing keys, e.g. {missing[:_SHOW_KEYS]}; "
        f"{len(unexpected)} unexpected keys, e.g. {unexpected[:_SHOW_KEYS]}. Check the backbone "
        "name, or save the full torchvision model or a cirtorch 'features.*' trunk."
    )


def _with_batch_counters(module: nn.Module, given: dict) -> dict:
    """Add BatchNorm `num_batches_tracked` counters that checkpoints from old torch lack."""
    filled = dict(given)
    for key in module.state_dict():
        if key.endswith("num_batches_tracked") and key not in filled:
            filled[key] = torch.tensor(0, dtype=torch.long)
    return filled


def _check_shapes(name: str, layout: str, expected: Mapping, given: Mapping) -> None:
    """Raise a ValueError naming the tensors whose shapes differ from the backbone's."""
    wrong = [
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if given[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(
            f"{layout}-layout state dict has {len(wrong)} tensors of the wrong shape for "
            f"backbone '{name}', e.g. {wrong[:_SHOW_KEYS]}; was it saved from another backbone?"
        )
