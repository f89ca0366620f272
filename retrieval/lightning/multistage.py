"""Batches larger than memory: the multi-stage backward (Revaud et al., ICCV'19), and DDP gathers.

A loss over a whole batch (AP over thousands of images) needs every descriptor at once, but the
activations of thousands of images do not fit in memory. The loss only depends on the network
through the descriptors, so the gradient can be taken in three stages:

1. forward the whole batch chunk by chunk without gradients: descriptors N x D (small);
2. compute the loss on those descriptors and its gradient G = dL/dD (N x D);
3. forward each chunk again with gradients and back-propagate ``G[chunk]`` into the network.

Stage 3 accumulates exactly dL/dparameters when both forwards give the same descriptors: the
network must be deterministic (BatchNorm frozen, no dropout or stochastic depth in training).
Each chunk's activations are freed after its backward, so memory is that of one chunk.

Under DDP every rank gathers the descriptors (and labels) of all ranks, computes the loss of the
global batch and keeps the gradient rows of its own images. DDP averages the parameter gradients
over ranks; since each rank already holds the whole loss, its rows are scaled by the world size.

Functions take ``forward(start, stop)``, the descriptors of batch items [start, stop), so the same
code serves a tensor batch, a list of variable-size images or a tuple batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist
from torch import Tensor

Forward = Callable[[int, int], Tensor]
Backward = Callable[[Tensor, Tensor], None]
LossFn = Callable[[Tensor, Tensor | None], Tensor]


def chunks(n: int, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive chunks of at most ``chunk_size`` items (None: one chunk)."""
    if n <= 0:
        raise ValueError(f"need at least one item, got n={n}")
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    step = n if chunk_size is None else int(chunk_size)
    for start in range(0, n, step):
        yield start, min(start + step, n)


def embed_without_grad(forward: Forward, n: int, chunk_size: int | None) -> Tensor:
    """Stage 1: descriptors of the n items, chunk by chunk, without building any graph."""
    with torch.no_grad():
        return torch.cat([forward(start, stop) for start, stop in chunks(n, chunk_size)])


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_equal_rows(local: Tensor, world_size: int) -> None:
    """Raise unless every rank holds the same number of rows (all_gather needs equal shapes)."""
    sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([len(local)], device=local.device))
    counts = [int(s) for s in sizes]
    if len(set(counts)) > 1:
        raise ValueError(
            f"ranks hold batches of different sizes {counts}: every rank needs the same number of "
            "images per batch to gather a global batch"
        )


def gather_rows(local: Tensor) -> Tensor:
    """Rows of every rank, concatenated in rank order (no gradient); ``local`` when alone."""
    _, world_size = world()
    if world_size == 1:
        return local
    _check_equal_rows(local, world_size)
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


def gather_rows_with_grad(local: Tensor) -> Tensor:
    """Rows of every rank in rank order, with gradients flowing into this rank's own rows.

    For a loss that every rank computes whole on the gathered rows: the own rows' gradient is then
    the complete dL/dlocal, scaled by the world size to undo DDP's averaging over ranks (as in
    :func:`multistage_backward`). Only all_gather is needed, no reduce-scatter.
    """
    rank, world_size = world()
    if world_size == 1:
        return local
    everyone = gather_rows(local.detach())
    if local.requires_grad:
        local = local.view_as(local)  # a new node: the hook leaves the caller's tensor alone
        local.register_hook(lambda grad: grad * world_size)
    n = len(local)
    return torch.cat([everyone[: rank * n], local, everyone[(rank + 1) * n :]])


def loss_and_gradient(
    loss_fn: LossFn, descriptors: Tensor, labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Stage 2: the loss of fixed descriptors and its gradient with respect to them.

    Parameters of the loss itself (e.g. a classification head) get their gradient accumulated as
    in an ordinary backward.
    """
    # Half-precision descriptors (mixed precision) get a float32 loss; float64 stays float64.
    dtype = torch.promote_types(descriptors.dtype, torch.float32)
    leaf = descriptors.detach().to(dtype).requires_grad_()
    with torch.enable_grad():
        loss = loss_fn(leaf, labels)
        loss.backward()
    return loss.detach(), leaf.grad


def _plain_backward(descriptors: Tensor, gradient: Tensor) -> None:
    descriptors.backward(gradient)


def backward_chunks(
    forward: Forward,
    gradient: Tensor,
    chunk_size: int | None,
    backward: Backward = _plain_backward,
    no_sync: Callable[[], AbstractContextManager] = nullcontext,
) -> None:
    """Stage 3: re-forward each chunk with gradients and back-propagate its gradient rows.

    ``no_sync`` (e.g. DDP's ``no_sync`` or Lightning's ``block_backward_sync``) holds gradient
    synchronisation back for every chunk but the last, which reduces the accumulated gradients once.
    """
    bounds = list(chunks(len(gradient), chunk_size))
    for i, (start, stop) in enumerate(bounds):
        with nullcontext() if i == len(bounds) - 1 else no_sync():
            descriptors = forward(start, stop)
            backward(descriptors, gradient[start:stop].to(descriptors.dtype))


def multistage_backward(
    forward: Forward,
    n: int,
    loss_fn: LossFn,
    labels: Tensor | None = None,
    chunk_size: int | None = None,
    gather: bool = True,
    backward: Backward = _plain_backward,
    no_sync: Callable[[], AbstractContextManager] = nullcontext,
) -> Tensor:
    """Accumulate the gradient of ``loss_fn(descriptors, labels)`` over n items in three stages.

    Returns the (detached) loss. With ``gather`` and several ranks the loss is that of the global
    batch (every rank's descriptors and labels, in rank order), and each rank's gradient rows are
    scaled by the world size to undo DDP's averaging. Without ``gather`` each rank computes the
    loss of its own items (a sum of per-tuple losses, as the tuple path under DDP).
    """
    local = embed_without_grad(forward, n, chunk_size)
    rank, world_size = world()
    if gather and world_size > 1:
        everyone = gather_rows(local)
        all_labels = gather_rows(labels) if labels is not None else None
        loss, gradient = loss_and_gradient(loss_fn, everyone, all_labels)
        gradient = gradient[rank * n : (rank + 1) * n] * world_size
    else:
        loss, gradient = loss_and_gradient(loss_fn, local, labels)
    backward_chunks(forward, gradient, chunk_size, backward, no_sync)
    return loss
