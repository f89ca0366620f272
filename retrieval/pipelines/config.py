"""Start-up validation of composed configurations, and building objects from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from retrieval.data.augment import Augmentation
from retrieval.models.cirtorch_weights import CIRTORCH_FEATURES
from retrieval.models.net import RetrievalNet, build_net
from retrieval.models.pooling import PoolingArgumentError, check_pooling_args


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid config `{key}`: {message}")


def _number(value: Any, key: str, kind: type = float) -> Any:
    """`value` as a float (or int), or a ConfigError naming `key` (e.g. optimizer.lr=abc)."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        wanted = "an integer" if kind is int else "a number"
        raise ConfigError(f"Invalid config `{key}`: {value!r} is not {wanted}.") from None


def validate_network_config(cfg: DictConfig) -> None:
    """Check backbone weights and pooling arguments before anything is built."""
    weights = str(cfg.backbone.get("weights", "none"))
    if weights == "cirtorch":
        _check(
            str(cfg.backbone.name) in CIRTORCH_FEATURES,
            "backbone.weights",
            f"'cirtorch' weights exist for {sorted(CIRTORCH_FEATURES)}, not {cfg.backbone.name}.",
        )
    elif weights != "none" and not weights.startswith("imagenet"):
        _check(
            Path(weights).expanduser().is_file(),
            "backbone.weights",
            f"{weights!r} is neither 'none', 'imagenet[:VERSION]', 'cirtorch' nor an existing "
            "state-dict file.",
        )
    try:  # the pooling checks its own arguments; name the key that passed the bad one
        check_pooling_args(str(cfg.pooling.name), pooling_args(cfg))
    except PoolingArgumentError as err:
        raise ConfigError(f"Invalid config `pooling.args.{err.argument}`: {err}") from None
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
    validate_loss_config(cfg)
    validate_optimizer_config(cfg.optimizer)
    data = cfg.data
    chunk = data.get("chunk_size")
    _check(
        chunk is None or _number(chunk, "data.chunk_size", int) > 0,
        "data.chunk_size",
        f"must be null or > 0, got {chunk}.",
    )
    _check(
        chunk is None or cfg.trainer.get("gradient_clip_val") is None,
        "trainer.gradient_clip_val",
        "multi-stage training (data.chunk_size) drives the backward itself: Lightning cannot "
        "clip its gradients; set trainer.gradient_clip_val=null.",
    )
    if data.kind == "classes":
        validate_label_data_config(data)
        augment = augmentation_from_config(data)
        _check(
            augment is None or not augment.active,
            "data.augment",
            "class batches (AP loss) train on plain images; augmentation is for tuple training "
            "(data=synthetic, labels, sfm120k, sfm_photos). Remove data.augment.",
        )
        return
    # data.qsize, poolsize and nnum are checked where mining is set up (validate_mining_setup).
    for key in ("batch_size", "image_size"):
        value = _number(data[key], f"data.{key}", int)
        _check(value > 0, f"data.{key}", f"must be a positive integer, got {data[key]}.")
    augmentation_from_config(data)
    valid_positives = ("fixed", "random_topk_inliers", "hardest")
    _check(
        data.positives in valid_positives,
        "data.positives",
        f"{data.positives!r} is not one of {', '.join(valid_positives)}.",
    )


def augmentation_from_config(data: DictConfig) -> Augmentation | None:
    """data.augment for the training tuples' images, or None where the data option has none."""
    node = data.get("augment")
    if node is None:
        return None
    values = {str(k): _number(v, f"data.augment.{k}") for k, v in node.items()}
    try:
        return Augmentation(**values)
    except ValueError as error:
        raise ConfigError(f"Invalid config `data.augment`: {error}") from None


def validate_optimizer_config(optimizer: DictConfig) -> None:
    """Every optimizer value but its name is a number (optimizer.lr=abc names the key); lr > 0."""
    for key, value in optimizer.items():
        if key != "name":
            _number(value, f"optimizer.{key}")
    _check(float(optimizer.lr) > 0, "optimizer.lr", f"must be > 0, got {optimizer.lr}.")


def validate_loss_config(cfg: DictConfig) -> None:
    """Check the loss name and the arguments of the built-in losses."""
    from retrieval.losses import LOSSES

    loss = cfg.loss
    name = str(loss.name)
    _check(
        name in LOSSES or name[:1].isupper(),
        "loss.name",
        f"{name!r} is neither one of {', '.join(LOSSES)} nor a pytorch-metric-learning loss "
        "class name (e.g. MultiSimilarityLoss).",
    )
    if "margin" in loss:
        margin = _number(loss.margin, "loss.margin")
        _check(margin > 0, "loss.margin", f"must be > 0, got {loss.margin}.")
    if "num_bins" in loss:
        _check(int(loss.num_bins) >= 2, "loss.num_bins", f"must be >= 2, got {loss.num_bins}.")
    if "min_score" in loss or "max_score" in loss:
        low, high = float(loss.get("min_score", 0.0)), float(loss.get("max_score", 1.0))
        _check(high > low, "loss.max_score", f"must exceed loss.min_score ({low}), got {high}.")
    if "temperature" in loss:
        _check(
            float(loss.temperature) > 0, "loss.temperature", f"must be > 0, got {loss.temperature}."
        )


def validate_label_data_config(data: DictConfig) -> None:
    """Check the keys of a class-labelled data set (data.kind=classes)."""
    from retrieval.data.classes import FORMATS, MISSING, SMALL_CLASSES

    for key, valid in (("format", FORMATS), ("small_classes", SMALL_CLASSES), ("missing", MISSING)):
        _check(
            data[key] in valid, f"data.{key}", f"{data[key]!r} is not one of {', '.join(valid)}."
        )
    for key in ("classes_per_batch", "image_size", "test_image_size", "mining_batch_size"):
        _check(int(data[key]) > 0, f"data.{key}", f"must be a positive integer, got {data[key]}.")
    _check(
        int(data.images_per_class) >= 2,
        "data.images_per_class",
        f"must be >= 2 (each image needs a positive in its batch), got {data.images_per_class}.",
    )
    per_epoch = data.get("batches_per_epoch")
    _check(
        per_epoch is None or int(per_epoch) > 0,
        "data.batches_per_epoch",
        f"must be null (one pass over the images) or > 0, got {per_epoch}.",
    )
    val_classes = data.get("val_classes") or 0
    _check(float(val_classes) >= 0, "data.val_classes", f"must be >= 0, got {val_classes}.")
    _check(
        bool(data.get("val_sfm")) or float(val_classes) > 0,
        "data.val_classes",
        "no validation set: hold out classes (data.val_classes=N, or a fraction < 1) or name an "
        "SfM database whose val split validates (data.val_sfm).",
    )
    _check(
        bool(data.get("benchmark")) or not data.get("val_sfm"),
        "data.benchmark",
        "name a validation benchmark (e.g. roxford5k) when the val set is an SfM split.",
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


def extract_options(cfg: DictConfig) -> dict[str, Any]:
    """The `extract` node of a config: precision, memory format, folding, compilation, loaders."""
    node = cfg.get("extract") or {}
    precision = node.get("precision", "fp32")
    _check(
        precision in ("auto", "fp32", "bf16", "fp16", "int8"),
        "extract.precision",
        f"{precision!r}; valid: auto, fp32, bf16, fp16, int8",
    )
    _check(
        not (precision == "int8" and node.get("compile", False)),
        "extract.compile",
        "true with extract.precision=int8; the quantised trunk runs uncompiled: set it to false",
    )
    return {
        "precision": str(node.get("precision", "fp32")),
        "channels_last": bool(node.get("channels_last", False)),
        "fold_bn": bool(node.get("fold_bn", True)),
        "compile": bool(node.get("compile", False)),
        "num_workers": int(node.get("num_workers", 0)),
    }


def worlds_dir(cfg: DictConfig) -> str | None:
    """Where synthetic worlds live (`paths.worlds_dir`); None: the library's default."""
    paths = cfg.get("paths")
    return str(paths.worlds_dir) if paths is not None and paths.get("worlds_dir") else None
