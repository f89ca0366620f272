"""Start-up validation of composed configurations, and building objects from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from retrieval.models.net import RetrievalNet, build_net


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid config `{key}`: {message}")


def validate_network_config(cfg: DictConfig) -> None:
    """Check backbone weights and pooling arguments before anything is built."""
    weights = str(cfg.backbone.get("weights", "none"))
    if weights != "none" and not weights.startswith("imagenet"):
        _check(
            Path(weights).expanduser().is_file(),
            "backbone.weights",
            f"{weights!r} is neither 'none', 'imagenet[:VERSION]' nor an existing state-dict file.",
        )
    args = cfg.pooling.get("args") or {}
    if "p" in args:
        _check(
            float(args["p"]) >= 1.0,
            "pooling.args.p",
            f"GeM p must be >= 1 (p=1 is average pooling), got {args['p']}.",
        )
    if "levels" in args:
        _check(int(args["levels"]) >= 1, "pooling.args.levels", "R-MAC needs at least 1 level.")
    if cfg.pooling.name == "neural_codes":
        _check(
            cfg.backbone.name in ("alexnet", "vgg16"),
            "pooling",
            f"neural_codes needs backbone=alexnet or vgg16, not {cfg.backbone.name}.",
        )
    whitening = cfg.get("whitening")
    if whitening is not None and not isinstance(whitening, str):
        _check(int(whitening) > 0, "whitening", "the whitening dimension must be positive.")


def validate_train_config(cfg: DictConfig) -> None:
    """Check every training value that would otherwise fail late or silently."""
    validate_network_config(cfg)
    _check(float(cfg.loss.margin) > 0, "loss.margin", f"must be > 0, got {cfg.loss.margin}.")
    _check(float(cfg.optimizer.lr) > 0, "optimizer.lr", f"must be > 0, got {cfg.optimizer.lr}.")
    data = cfg.data
    for key in ("qsize", "poolsize", "nnum", "batch_size", "image_size"):
        _check(int(data[key]) > 0, f"data.{key}", f"must be a positive integer, got {data[key]}.")
    _check(
        int(data.poolsize) >= int(data.nnum),
        "data.poolsize",
        f"the pool ({data.poolsize}) must hold at least data.nnum={data.nnum} images.",
    )
    valid_positives = ("fixed", "random_topk_inliers", "hardest")
    _check(
        data.positives in valid_positives,
        "data.positives",
        f"{data.positives!r} is not one of {', '.join(valid_positives)}.",
    )


def pooling_args(cfg: DictConfig, backbone_dim: int | None = None) -> dict[str, Any]:
    """Pooling arguments as a plain dict; `per_channel: auto` becomes the backbone's width."""
    node = cfg.pooling.get("args")
    args = dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}
    if args.get("per_channel") == "auto":
        from retrieval.models.backbones import BACKBONES

        args["per_channel"] = backbone_dim or BACKBONES[cfg.backbone.name].out_dim
    return args


def build_net_from_config(cfg: DictConfig) -> RetrievalNet:
    """The network described by the backbone/pooling/whitening groups."""
    whitening = cfg.get("whitening")
    return build_net(
        backbone=cfg.backbone.name,
        pooling=cfg.pooling.name,
        pooling_args=pooling_args(cfg),
        weights=str(cfg.backbone.get("weights", "none")),
        whitening=int(whitening) if isinstance(whitening, int) else None,
    )
