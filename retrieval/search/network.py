"""The network of an index and where it runs: its source, loading, record and device; options."""

from __future__ import annotations

import math
import numbers
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from retrieval.checkpoint import load_checkpoint
from retrieval.extraction.cache import network_fingerprint
from retrieval.extraction.inference import resolve_device, resolve_precision
from retrieval.models.net import RetrievalNet, build_net
from retrieval.search.defaults import DEFAULT_BACKBONE, DEFAULT_POOLING
from retrieval.search.errors import SearchError

# Raised by loading a checkpoint file that is not one (garbage, empty, refused pickle, no meta).
_BAD_CHECKPOINT = (ValueError, RuntimeError, EOFError, pickle.UnpicklingError)


def network_source(
    checkpoint: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    pooling: str = DEFAULT_POOLING,
) -> dict[str, str]:
    """How to rebuild a network: a checkpoint file, or an off-the-shelf ImageNet backbone."""
    if checkpoint:
        return {"checkpoint": os.path.abspath(Path(checkpoint).expanduser())}
    return {"backbone": backbone, "pooling": pooling, "weights": "imagenet"}


def load_network(source: dict[str, str]) -> RetrievalNet:
    """The network a `network_source` describes."""
    if "checkpoint" in source:
        path = Path(source["checkpoint"])
        if not path.is_file():
            raise SearchError(
                f"checkpoint {path} not found; pass --checkpoint with the network of the index"
            )
        try:
            return load_checkpoint(path)
        except _BAD_CHECKPOINT as err:
            raise SearchError(
                f"checkpoint {path} does not load ({err}); pass a model.pt or .ckpt of train.py"
            ) from err
    try:
        return build_net(source["backbone"], source["pooling"], weights=source["weights"])
    except ValueError as err:  # an unknown name, listed with the valid ones
        raise SearchError(f"--backbone/--pooling: {err}") from err


def usable_device(name: str | torch.device) -> torch.device:
    """The device `name` stands for ('auto': CUDA when present), checked to be usable here."""
    try:
        device = resolve_device(str(name))
    except RuntimeError as err:
        raise SearchError(f"--device {name} is not a device ({err}); use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SearchError(f"--device {name}: no CUDA GPU is usable here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SearchError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
            "use --device cuda:0, or --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        try:  # any other backend (mps, xpu, ...): usable when it can hold a tensor
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as err:
            raise SearchError(
                f"--device {name} is not usable here ({err}); use --device cpu"
            ) from None
    return device


def check_index_options(
    image_size: int,
    scales: tuple[float, ...],
    precision: str,
    batch_size: int,
    chunk_size: int,
    device: str | torch.device,
) -> torch.device:
    """Refuse bad indexing options before any work, naming the option; returns the device."""
    for option, value in (
        ("--image-size", image_size),
        ("--batch-size", batch_size),
        ("--chunk", chunk_size),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise SearchError(f"{option} must be a whole number of at least 1, got {value!r}")
    if not scales or not all(
        isinstance(s, numbers.Real) and math.isfinite(s) and s > 0 for s in scales
    ):
        scales_text = " ".join(map(str, scales)) or "nothing"
        raise SearchError(f"--scales must be positive factors, e.g. 1 0.707 0.5; got {scales_text}")
    resolved = usable_device(device)
    try:
        resolve_precision(precision, resolved)
    except ValueError as err:
        raise SearchError(f"--precision: {err}") from None
    return resolved


def network_name(meta: dict[str, Any]) -> str:
    """A short human name of a network, e.g. 'efficientnet_lite0-gem-whiten512'."""
    name = f"{meta['backbone']}-{meta['pooling']}"
    return name + (f"-whiten{meta['whitening']}" if meta.get("whitening") else "")


def network_record(net: RetrievalNet, source: dict[str, str]) -> dict[str, Any]:
    """What the index stores about its network: source, meta, name and fingerprint."""
    return {
        "source": dict(source),
        "name": network_name(net.meta),
        "fingerprint": network_fingerprint(net),
        "meta": net.meta,
    }


def describe_source(source: dict[str, str]) -> str:
    """Where a network comes from, in words."""
    if "checkpoint" in source:
        return f"checkpoint {source['checkpoint']}"
    return f"{source['weights']} {source['backbone']}-{source['pooling']}"
