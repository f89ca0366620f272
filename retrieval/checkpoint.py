"""Saving and loading networks: the only code that knows the layout of a checkpoint file.

Two layouts load: ours, ``{"meta", "state_dict", **extra}`` (``save_checkpoint``), and a Lightning
checkpoint of ``retrieval.lightning.module.RetrievalModule``, whose hyper-parameters hold the
network's meta under LIGHTNING_META_KEY and whose state dict holds the network under ``net.``.
"""

from __future__ import annotations

import copy
import errno
import pickle
from pathlib import Path
from typing import Any

import torch

from retrieval.atomic import atomic_write
from retrieval.models.net import RetrievalNet, net_from_meta

# Where a Lightning checkpoint keeps what rebuilds the network: RetrievalModule saves the meta
# under this hyper-parameter and holds the network as its `net` attribute.
LIGHTNING_META_KEY = "net_meta"
_LIGHTNING_NET_PREFIX = "net."


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded; the message names the file and the fix."""


def save_checkpoint(path: str | Path, net: RetrievalNet, **extra: Any) -> Path:
    """Write {'meta', 'state_dict', **extra} atomically (temp file, then rename)."""
    payload = {"meta": copy.deepcopy(net.meta), "state_dict": net.state_dict(), **extra}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def _meta_and_state(path: Path, payload: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """The network's meta and state dict from either layout."""
    meta = payload.get("meta") or payload.get("hyper_parameters", {}).get(LIGHTNING_META_KEY)
    if meta is None:
        raise ValueError(
            f"{path} has no 'meta' describing the network (backbone, pooling, whitening): "
            "it was not written by retrieval. Load raw weights with backbone.weights=PATH instead."
        )
    state = payload["state_dict"]
    if any(k.startswith(_LIGHTNING_NET_PREFIX) for k in state):
        cut = len(_LIGHTNING_NET_PREFIX)
        state = {k[cut:]: v for k, v in state.items() if k.startswith(_LIGHTNING_NET_PREFIX)}
    return meta, state


def _is_truncation(err: Exception) -> bool:
    """Whether torch.load failed because the file ends early (0 bytes, cut zip archive)."""
    if isinstance(err, EOFError):
        return True
    if isinstance(err, OSError):
        return err.errno == errno.EINVAL  # a zip whose end lies past the file's end
    return isinstance(err, RuntimeError) and "failed reading zip archive" in str(err)


def load_payload(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True, whatever torch's default or its environment says:
    unpickling a hostile file must never run its code. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Checkpoint {path} holds pickled objects other than tensors and plain containers "
            f"(they could run code), so it is not a checkpoint written by retrieval; refusing "
            f"to load it. Use a checkpoint from train.py (RUN/checkpoints/last.ckpt). ({err})"
        ) from None
    except (EOFError, OSError, RuntimeError) as err:
        if not _is_truncation(err):
            raise
        raise CheckpointError(
            f"checkpoint {path} is empty or truncated (an interrupted copy or a full disk?): "
            "use another checkpoint, e.g. RUN/checkpoints/best.ckpt, or copy it again."
        ) from None
    except (KeyError, ValueError) as err:  # torch's legacy reader on a file of another kind
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint ({type(err).__name__}: {err}): "
            "name a .ckpt or .pt file written by train.py."
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(payload).__name__}, not a dict.")
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> RetrievalNet:
    """Rebuild a network from our checkpoint or a Lightning checkpoint of RetrievalModule."""
    path = Path(path)
    payload = load_payload(path, map_location)
    meta, state = _meta_and_state(path, payload)
    net = net_from_meta(meta)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"Checkpoint {path} does not fit its network ({meta['backbone']}-{meta['pooling']}): "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
            f"shape mismatches {mismatched[:5]}"
        )
    net.load_state_dict(state)
    return net
