"""The descriptor cache: fingerprints of networks and image lists, keys, and cached extraction."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retrieval.atomic import atomic_write
from retrieval.types import Box

logger = logging.getLogger(__name__)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw bytes of a tensor in a standard (contiguous, CPU) layout; works for any dtype."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def network_fingerprint(net: nn.Module) -> str:
    """Hash of a network's identity: class, meta and every state-dict tensor (names and values)."""
    h = hashlib.sha256(type(net).__qualname__.encode())
    h.update(json.dumps(getattr(net, "meta", None), sort_keys=True, default=str).encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()[:32]


def image_list_fingerprint(
    paths: Sequence[str | Path], boxes: Sequence[Box | None] | None = None
) -> str:
    """Hash of an ordered image list and its query boxes."""
    payload = {"paths": [str(p) for p in paths]}
    if boxes is not None:
        payload["boxes"] = [None if b is None else [float(v) for v in b] for b in boxes]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]


def _json_default(value: Any) -> Any:
    """Make cache-key values JSON-able: arrays/tensors by hash, paths as strings."""
    if isinstance(value, torch.Tensor):
        digest = hashlib.sha256(_tensor_bytes(value)).hexdigest()
        return {"tensor": digest, "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return {"array": digest, "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    # repr() of arbitrary objects may hold memory addresses, which would silently never hit.
    raise TypeError(f"cache key value of type {type(value).__name__} is not hashable into a key")


def cache_key_hash(key: dict[str, Any]) -> str:
    """Stable hash of a cache key (a JSON-able dict; arrays and tensors are hashed by content)."""
    text = json.dumps(key, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# Bumped when decoding or cropping images changes what a descriptor is computed from, so that
# descriptors cached by an older loader are recomputed. 2: 16-bit photos scaled, not clipped to
# white; query boxes clipped to the image. 3: cirtorch's resize (thumbnail, LANCZOS, crops floored).
LOADER_VERSION = 3


def extraction_key(
    net: nn.Module,
    dataset: str,
    paths: Sequence[str | Path],
    boxes: Sequence[Box | None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Cache key of an extraction: network, dataset, image list and the extraction settings."""
    key = {
        "loader": LOADER_VERSION,
        "net": network_fingerprint(net),
        "dataset": dataset,
        "images": image_list_fingerprint(paths, boxes),
        "num_images": len(paths),
    }
    key.update({k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()})
    return key


def cached_extract(
    cache_dir: str | Path | None, key: dict[str, Any], fn: Callable[[], np.ndarray]
) -> np.ndarray:
    """Load the descriptors stored under `key`, or compute them with `fn()` and store them.

    Files are ``<cache_dir>/<hash of key>.npy`` plus a ``.json`` with the key, for inspection.
    With `cache_dir=None` this just calls `fn`.
    """
    if cache_dir is None:
        return fn()
    cache_dir = Path(cache_dir)
    name = cache_key_hash(key)
    path = cache_dir / f"{name}.npy"
    if path.is_file():
        try:
            array = np.load(path)
            logger.info("loaded cached descriptors %s", path)
            return array
        except (OSError, ValueError) as err:
            logger.warning("unreadable descriptor cache %s (%s); recomputing", path, err)
    array = np.asarray(fn(), dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: np.save(handle, array))
    (cache_dir / f"{name}.json").write_text(json.dumps(key, sort_keys=True, default=_json_default))
    logger.info("stored descriptors %s", path)
    return array
