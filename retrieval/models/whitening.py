"""Descriptor whitening: learned (Lw) and PCA projections, and a torch layer built from them.

Descriptors are N x D rows. A whitening is a pair ``(mean, P)`` with ``mean`` of shape (D,) and
``P`` of shape (D, D); it maps descriptors to ``(X - mean) @ P.T``. Rows of ``P`` are ordered by
decreasing importance, so ``P[:dim]`` is a dimensionality reduction to ``dim`` components.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)

# Relative ridge: the pair-difference covariance is regularised when its smallest eigenvalue
# falls below this fraction of its largest one.
_RIDGE_RCOND = 1e-8


def _as_descriptors(X: ArrayLike, name: str = "X") -> np.ndarray:
    """Return X as a float64 N x D array, or raise a clear error."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be an N x D array of descriptors (one per row); got shape {arr.shape}. "
            f"For a single descriptor pass {name}[None, :]."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; clean the descriptors first.")
    return arr


def _as_indices(idxs: ArrayLike, name: str, n_rows: int) -> np.ndarray:
    """Return idxs as a 1-D int array of row indices, naming any index out of range."""
    arr = np.asarray(idxs)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of row indices; got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer row indices; got dtype {arr.dtype}.")
    bad = np.flatnonzero((arr < 0) | (arr >= n_rows))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] = {int(arr[i])} is out of range for X with {n_rows} rows "
            f"(valid indices are 0..{n_rows - 1}; negative indices are not allowed)."
        )
    return arr.astype(np.int64)


def _check_whitening(
    mean: ArrayLike, P: ArrayLike, dim: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (mean, P) pair and return ``(mean, P[:dim])`` as float64 arrays."""
    mean = np.asarray(mean, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"P must be a 2-D projection matrix (out_dim x D); got shape {P.shape}.")
    if mean.shape != (P.shape[1],):
        raise ValueError(
            f"mean must have shape ({P.shape[1]},) to match P of shape {P.shape}; got {mean.shape}."
        )
    if dim is not None:
        if not 1 <= dim <= P.shape[0]:
            raise ValueError(
                f"dim must be between 1 and {P.shape[0]} (the rows of P); got dim={dim}."
            )
        P = P[:dim]
    return mean, P


def _sorted_eigh(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decompose symmetric S with eigenvalues descending and deterministic vector signs."""
    eigval, eigvec = np.linalg.eigh((S + S.T) / 2)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    # Eigenvectors are defined up to sign; make the largest-magnitude entry of each positive
    # so the same data always gives the same projection.
    pivot = np.argmax(np.abs(eigvec), axis=0)
    signs = np.sign(eigvec[pivot, np.arange(eigvec.shape[1])])
    signs[signs == 0] = 1.0
    return eigval, eigvec * signs


def _regularised_cholesky(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of S, adding a ridge to the diagonal when S is (near) singular."""
    eigval = np.linalg.eigvalsh(S)
    largest = float(eigval[-1])
    if largest <= 0.0:
        raise ValueError(
            "Matching-pair differences X[qidxs] - X[pidxs] are all zero, so there is nothing to "
            "whiten; check that qidxs and pidxs point at different images."
        )
    ridge = _RIDGE_RCOND * largest
    if eigval[0] < ridge:
        logger.warning(
            "Pair-difference covariance is singular or ill-conditioned (eigenvalues %.3g..%.3g); "
            "adding a ridge of %.3g to its diagonal before the Cholesky factorisation.",
            eigval[0],
            largest,
            ridge,
        )
        S = S + ridge * np.eye(S.shape[0])
    return np.linalg.cholesky(S)


def learn_whitening(
    X: ArrayLike,
    qidxs: ArrayLike,
    pidxs: ArrayLike,
    *,
    dim: int | None = None,
    shrinkage: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Learn the Lw whitening (Mikolajczyk & Matas) from matching pairs ``(X[qidxs], X[pidxs])``.

    The mean is taken over the query rows. ``P0 = L^-1`` where ``L L^T`` is the second-moment
    matrix of the pair differences, so differences become white; ``P0`` is then rotated onto the
    principal axes (eigenvalues descending) of ``P0 (X - mean)`` over all rows of X. This is
    cirtorch's ``whitenlearn`` when ``dim`` is None and ``shrinkage`` is 0.

    ``dim`` first projects X onto its ``dim`` leading principal axes, so the covariance to invert
    is ``dim x dim`` and needs ``dim`` pairs, not D. ``shrinkage`` in [0, 1) blends that covariance
    with its mean eigenvalue times the identity, which keeps the directions few pairs estimate
    from being magnified. Returns ``(mean, P)``: shapes (D,) and (dim or D, D).
    """
    X = _as_descriptors(X)
    n_rows, n_dims = X.shape
    qidxs = _as_indices(qidxs, "qidxs", n_rows)
    pidxs = _as_indices(pidxs, "pidxs", n_rows)
    if qidxs.shape != pidxs.shape:
        raise ValueError(
            f"qidxs and pidxs must pair up one to one; got {qidxs.size} and {pidxs.size} indices."
        )
    if dim is not None and not 1 <= dim <= n_dims:
        raise ValueError(f"dim must be between 1 and D={n_dims}; got dim={dim}.")
    if not 0.0 <= shrinkage < 1.0:
        raise ValueError(f"shrinkage must be in [0, 1); got shrinkage={shrinkage}.")
    out_dims = n_dims if dim is None else int(dim)
    if qidxs.size < out_dims and shrinkage == 0.0:
        raise ValueError(
            f"learn_whitening needs at least {out_dims} matching pairs to estimate a {out_dims} x "
            f"{out_dims} pair-difference covariance; got {qidxs.size} pairs. Use more pairs, "
            f"a smaller dim (dim <= {qidxs.size}) or shrinkage > 0."
        )

    mean = X[qidxs].mean(axis=0)
    basis = np.eye(n_dims) if dim is None else _sorted_eigh(_scatter(X - X.mean(axis=0)))[1]
    basis = basis[:, :out_dims].T  # (out_dims, D): the leading principal axes of X
    Y = (X - mean) @ basis.T
    diff = Y[qidxs] - Y[pidxs]
    S = diff.T @ diff / diff.shape[0]
    if shrinkage:
        S = (1.0 - shrinkage) * S + shrinkage * np.trace(S) / out_dims * np.eye(out_dims)
    P0 = np.linalg.inv(_regularised_cholesky(S))

    _, eigvec = _sorted_eigh(_scatter(Y @ P0.T))
    return mean, eigvec.T @ P0 @ basis


def _scatter(Y: np.ndarray) -> np.ndarray:
    """Second-moment matrix ``Y^T Y`` of the rows of Y."""
    return Y.T @ Y


def pca_whitening(X: ArrayLike, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Learn PCA whitening ``P = diag(1/sqrt(eig)) V^T`` of X (eigenvalues descending).

    Eigenvalues below ``eps`` times the largest are clamped to it so null directions of X (for
    example when N <= D) do not divide by zero. Returns ``(mean, P)``, float64 arrays of shapes
    (D,) and (D, D).
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0; got eps={eps}.")
    X = _as_descriptors(X)
    mean = X.mean(axis=0)
    Xc = X - mean
    eigval, eigvec = _sorted_eigh(Xc.T @ Xc / X.shape[0])
    if eigval[0] <= 0.0:
        raise ValueError("X has zero variance (all rows identical); PCA whitening is undefined.")
    eigval = np.maximum(eigval, eps * eigval[0])
    return mean, eigvec.T / np.sqrt(eigval)[:, None]


def apply_whitening(
    X: ArrayLike, mean: ArrayLike, P: ArrayLike, dim: int | None = None
) -> np.ndarray:
    """Whiten descriptors: ``(X - mean) @ P[:dim].T`` with L2-normalised rows.

    Float32 input stays float32; anything else comes back as float64.
    """
    in_dtype = np.asarray(X).dtype
    X = _as_descriptors(X)
    mean, P = _check_whitening(mean, P, dim)
    if X.shape[1] != P.shape[1]:
        raise ValueError(
            f"X has {X.shape[1]} dimensions but the whitening expects {P.shape[1]}; "
            "learn the whitening on descriptors from the same network."
        )
    Y = (X - mean) @ P.T
    norms = np.linalg.norm(Y, axis=1, keepdims=True)
    Y = Y / np.maximum(norms, np.finfo(np.float64).tiny)
    return Y.astype(np.float32) if in_dtype == np.float32 else Y


def whitening_layer(mean: ArrayLike, P: ArrayLike, dim: int | None = None) -> torch.nn.Linear:
    """Build a trainable ``nn.Linear`` computing ``(x - mean) @ P[:dim].T`` (not normalised)."""
    mean, P = _check_whitening(mean, P, dim)
    out_dim, in_dim = P.shape
    layer = torch.nn.Linear(in_dim, out_dim, bias=True)
    dtype = layer.weight.dtype
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(P).to(dtype))
        layer.bias.copy_(torch.from_numpy(-P @ mean).to(dtype))
    return layer
