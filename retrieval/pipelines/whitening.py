"""Whitening for the jobs: Lw or PCA learned from an SfM set's whitening pairs, sized by config.

evaluate.py whitens descriptors after extraction (`whitening=learned|pca`, `whitening_dim`,
`whitening_shrinkage`); train.py starts a whitening layer (`whitening=DIM`) from Lw learned on
the training set's pairs with the starting network, as cirtorch's `-w` does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from retrieval.data import formats
from retrieval.extraction.extract import extract_descriptors
from retrieval.models.net import RetrievalNet
from retrieval.models.whitening import learn_whitening, pca_whitening, whitening_layer
from retrieval.pipelines.config import ConfigError

log = logging.getLogger(__name__)

WHITENINGS = (None, "learned", "pca")
# The SfM sets whose `<name>-whiten.pkl` evaluate.py looks for when whitening_data is not set.
DEFAULT_WHITENING_DATA = ("synthetic-sfm", "retrieval-SfM-120k", "retrieval-SfM-30k")


def default_whitening_data(root: Path) -> str:
    """The first SfM set under `root/train` that has whitening pairs, or a FileNotFoundError."""
    for name in DEFAULT_WHITENING_DATA:
        if formats.sfm_whiten_path(root, name).is_file():
            return name
    raise FileNotFoundError(
        f"No whitening pairs under {root}/train; set whitening_data=NAME or download them with "
        f"`{formats.download_command('retrieval-SfM-120k', root)}`."
    )


def learn_projection(
    kind: str,
    descriptors: np.ndarray,
    qidxs: np.ndarray,
    pidxs: np.ndarray,
    dim: int | None,
    shrinkage: float,
    keys: tuple[str, str, str] = (
        "whitening_dim",
        "whitening_shrinkage",
        "more pairs: whitening_data=NAME",
    ),
) -> tuple[np.ndarray, np.ndarray]:
    """`(mean, P)` of whitening `kind` with `dim` rows; errors name the config `keys` (dimension,
    shrinkage, and the other way out)."""
    n_pairs, n_dims = len(qidxs), descriptors.shape[1]
    dim_key, shrinkage_key, otherwise = keys
    if not 0.0 <= shrinkage < 1.0:
        raise ConfigError(
            f"Invalid config `{shrinkage_key}`: must be in [0, 1) (e.g. 0.1; 0: cirtorch's Lw), "
            f"got {shrinkage!r}."
        )
    if dim is not None and dim > n_dims:
        raise ConfigError(
            f"Invalid config `{dim_key}`: {dim} exceeds the network's {n_dims}-D descriptors; "
            f"set {dim_key}=null (all) or at most {n_dims}."
        )
    if kind == "pca":
        mean, projection = pca_whitening(descriptors)
        return mean, projection[:dim]
    needed = dim or n_dims
    if n_pairs < needed and shrinkage == 0.0:
        raise ConfigError(
            f"Learned whitening (Lw): {n_pairs} matching pairs cannot estimate the {needed} x "
            f"{needed} pair-difference covariance. Set {dim_key}=N with N <= {n_pairs} (e.g. "
            f"{dim_key}={_power_of_two_at_most(n_pairs)}), or {shrinkage_key}=0.3, or "
            f"{otherwise}."
        )
    return learn_whitening(descriptors, qidxs, pidxs, dim=dim, shrinkage=shrinkage)


def _power_of_two_at_most(n: int) -> int:
    return 1 << max(int(n).bit_length() - 1, 0)


def init_whitening_layer(
    net: RetrievalNet,
    pairs: formats.WhitenPairs,
    shrinkage: float,
    **extract_options: object,
) -> None:
    """Replace `net`'s whitening layer by Lw learned on `pairs` with its pooled descriptors."""
    layer = net.whitening
    if layer is None:
        raise ValueError("the network has no whitening layer to initialise")
    out_dim, in_dim = layer.weight.shape
    net.whitening = None  # the pooled descriptors, which the layer will see
    try:
        descriptors = extract_descriptors(
            net, pairs.image_paths, desc="whitening pairs", **extract_options
        )
    finally:
        net.whitening = layer
    mean, projection = learn_projection(
        "learned",
        descriptors,
        pairs.qidxs,
        pairs.pidxs,
        dim=out_dim,
        shrinkage=shrinkage,
        keys=("whitening", "whitening_shrinkage", "start as the identity: whitening_init=identity"),
    )
    learned = whitening_layer(mean, projection)
    with torch.no_grad():
        layer.weight.copy_(learned.weight)
        layer.bias.copy_(learned.bias)
    log.info(
        "whitening layer %d -> %d initialised with Lw from %d matching pairs (%d images)",
        *(in_dim, out_dim, len(pairs.qidxs), len(pairs.image_paths)),
    )


WHITENING_INITS = ("learned", "identity")


def start_whitening_layer(
    net: RetrievalNet,
    init: str,
    pairs_path: Path | None,
    shrinkage: float,
    **extract_options: object,
) -> None:
    """train.py `whitening=DIM`: start the layer from Lw on the training pairs (cirtorch's -w)."""
    if init not in WHITENING_INITS:
        raise ConfigError(
            f"Invalid config `whitening_init`: {init!r}; valid: {', '.join(WHITENING_INITS)}"
        )
    if net.whitening is None or init == "identity":
        return
    out_dim, in_dim = net.whitening.weight.shape
    if out_dim > in_dim:
        log.warning(
            "whitening=%d exceeds the %d-D pooled descriptor: the layer starts as the identity "
            "(Lw has at most %d rows); set whitening<=%d to start from Lw.",
            *(out_dim, in_dim, in_dim, in_dim),
        )
        return
    if pairs_path is None or not pairs_path.is_file():
        log.warning(
            "whitening layer starts as the identity: the training data has no whitening pairs "
            "(%s); whitening_init=identity silences this.",
            pairs_path or "only SfM data sets have them",
        )
        return
    init_whitening_layer(net, formats.read_whiten_pairs(pairs_path), shrinkage, **extract_options)


def start_whitening_from_config(
    cfg: DictConfig, net: RetrievalNet, root: Path, **extract_options: object
) -> None:
    """Start train.py's whitening layer as `whitening_init` says, from `root`'s SfM pairs."""
    data = cfg.data
    sfm = data.kind == "sfm"
    start_whitening_layer(
        net,
        str(cfg.get("whitening_init", "learned")),
        formats.sfm_whiten_path(root, str(data.name)) if sfm else None,
        float(cfg.get("whitening_shrinkage", 0.3)),
        max_side=int(data.image_size),
        batch_size=int(data.mining_batch_size),
        num_workers=int(data.num_workers),
        **extract_options,
    )
