"""cirtorch's ImageNet trunks converted from Caffe (``imagenet-caffe-*``): where they are, fetching.

cirtorch initialises VGG16 and ResNet-50/101/152 from these files rather than from torchvision's
ImageNet weights because retrieval is better with them. Each file is the state dict of the
trunk alone (cirtorch's ``net.features``: keys ``0.weight``, ``4.0.conv1.weight``, ...), for
inputs normalised with the usual ImageNet mean and std.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_BASE = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/imagenet/"

# backbone name -> file name on cirtorch's server (the names cirtorch's FEATURES table lists)
CIRTORCH_FEATURES: dict[str, str] = {
    "vgg16": "imagenet-caffe-vgg16-features-d369c8e.pth",
    "resnet50": "imagenet-caffe-resnet50-features-ac468af.pth",
    "resnet101": "imagenet-caffe-resnet101-features-10a101d.pth",
    "resnet152": "imagenet-caffe-resnet152-features-1011020.pth",
}


def cirtorch_weights_dir() -> Path:
    """Folder of the downloaded files: the torch hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cirtorch_features_url(name: str) -> str:
    """URL of backbone `name`'s cirtorch trunk, or a ValueError listing those that have one."""
    if name not in CIRTORCH_FEATURES:
        raise ValueError(
            f"backbone '{name}' has no cirtorch ImageNet weights (weights='cirtorch'); those with "
            f"one: {sorted(CIRTORCH_FEATURES)}. Use weights='imagenet' for torchvision's."
        )
    return _BASE + CIRTORCH_FEATURES[name]


def load_cirtorch_features(name: str) -> Mapping[str, torch.Tensor]:
    """The trunk state dict of backbone `name` (cirtorch's ``features`` keys), downloaded once.

    Read with ``weights_only=True``: the file is plain tensors, a file holding code is refused.
    """
    url = cirtorch_features_url(name)
    path = cirtorch_weights_dir() / CIRTORCH_FEATURES[name]
    if not path.is_file():
        _download(name, url, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not cirtorch's state dict")
    return state


def _download(name: str, url: str, path: Path) -> None:
    """Fetch `url` to `path` (torch hub writes a temporary file and renames it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading cirtorch ImageNet weights of '%s': %s", name, url)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except OSError as err:  # URLError, HTTPError, timeouts, connection errors
        raise RuntimeError(
            f"cirtorch ImageNet weights {path.name} for backbone '{name}' are not in {path.parent} "
            f"and could not be downloaded ({err}). Fetch {url} and save it in {path.parent} "
            "(set TORCH_HOME to move that folder), or use backbone.weights=imagenet "
            "(torchvision's)."
        ) from err
