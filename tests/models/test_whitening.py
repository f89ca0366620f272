"""Learned (Lw) and PCA whitening, checked against independent computations."""

import logging

import numpy as np
import pytest
import torch

from retrieval.models.whitening import (
    apply_whitening,
    learn_whitening,
    pca_whitening,
    whitening_layer,
)


def planted_pairs(
    n_pairs: int = 80, dim: int = 5, n_extra: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matching pairs share a centre and differ by correlated, anisotropic noise; extra rows are
    distractors. Returns X (queries, then positives, then extras), qidxs, pidxs."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((n_pairs, dim))
    mixing = rng.standard_normal((dim, dim)) * np.linspace(0.2, 1.5, dim)
    queries = centres + rng.standard_normal((n_pairs, dim)) @ mixing.T
    positives = centres + rng.standard_normal((n_pairs, dim)) @ mixing.T
    extras = 3.0 * rng.standard_normal((n_extra, dim))
    X = np.vstack([queries, positives, extras])
    return X, np.arange(n_pairs), np.arange(n_pairs, 2 * n_pairs)


def rotated_gaussian(scales: list[float], n: int = 500, seed: int = 1) -> np.ndarray:
    """Gaussian samples with standard deviations `scales` along random orthogonal axes, offset."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((len(scales), len(scales))))
    return rng.standard_normal((n, len(scales))) * scales @ rotation.T + 5.0


def test_learn_whitening_makes_pair_differences_white():
    X, q, p = planted_pairs()
    mean, P = learn_whitening(X, q, p)
    np.testing.assert_allclose(mean, X[q].mean(axis=0))
    Z = (X[q] - X[p]) @ P.T
    np.testing.assert_allclose(Z.T @ Z / len(q), np.eye(X.shape[1]), atol=1e-9)


def test_learn_whitening_rotates_onto_descending_principal_axes():
    X, q, p = planted_pairs()
    mean, P = learn_whitening(X, q, p)
    Y = (X - mean) @ P.T
    scatter = Y.T @ Y
    diagonal = np.diag(scatter)
    np.testing.assert_allclose(scatter - np.diag(diagonal), 0.0, atol=1e-8 * diagonal.max())
    assert np.all(np.diff(diagonal) < 0)


def test_learn_whitening_matches_independent_computation():
    X, q, p = planted_pairs()
    mean, P = learn_whitening(X, q, p)

    # Pair-difference second moment as an average of outer products.
    S = np.mean([np.outer(X[i] - X[j], X[i] - X[j]) for i, j in zip(q, p, strict=True)], axis=0)
    # Rotation-invariant: P^T P must be S^-1 whatever orthogonal factor is chosen.
    np.testing.assert_allclose(P.T @ P, np.linalg.inv(S), rtol=1e-8, atol=1e-10)

    # Build the projection differently: symmetric S^-1/2 instead of the Cholesky factor, then the
    # principal axes of the whitened data. It must agree row by row up to sign.
    w, V = np.linalg.eigh(S)
    W = V @ np.diag(w**-0.5) @ V.T
    Xc = (X - X[q].mean(axis=0)) @ W.T
    u, U = np.linalg.eigh(Xc.T @ Xc)
    P_independent = U[:, np.argsort(u)[::-1]].T @ W
    signs = np.sign(np.sum(P * P_independent, axis=1))
    np.testing.assert_allclose(P, signs[:, None] * P_independent, rtol=1e-7, atol=1e-9)


def test_learn_whitening_regularises_singular_covariance(caplog):
    # The last coordinate is identical within each pair, so the difference covariance is singular.
    X, q, p = planted_pairs(n_pairs=10, dim=3, n_extra=0)
    X[p, 2] = X[q, 2]
    with caplog.at_level(logging.WARNING, logger="retrieval.models.whitening"):
        _, P = learn_whitening(X, q, p)
    assert "adding a ridge" in caplog.text
    assert np.all(np.isfinite(P))
    diffs = X[q] - X[p]
    S = diffs.T @ diffs / len(q)
    ridged = S + 1e-8 * np.linalg.eigvalsh(S).max() * np.eye(3)
    np.testing.assert_allclose(P.T @ P, np.linalg.inv(ridged), rtol=1e-6, atol=1e-6)


def test_learn_whitening_input_errors():
    X, q, p = planted_pairs(n_pairs=10, dim=4, n_extra=0)
    with pytest.raises(ValueError, match=r"at least 4 matching pairs .* got 3 pairs.*dim <= 3"):
        learn_whitening(X, q[:3], p[:3])
    with pytest.raises(ValueError, match=r"dim must be between 1 and D=4; got dim=5"):
        learn_whitening(X, q, p, dim=5)
    with pytest.raises(ValueError, match=r"shrinkage must be in \[0, 1\); got shrinkage=1.0"):
        learn_whitening(X, q, p, shrinkage=1.0)
    with pytest.raises(ValueError, match=r"qidxs\[1\] = 20 is out of range for X with 20 rows"):
        learn_whitening(X, [0, 20, 2, 3], p[:4])
    with pytest.raises(ValueError, match=r"pidxs\[0\] = -1 is out of range"):
        learn_whitening(X, q[:4], [-1, 11, 12, 13])
    with pytest.raises(ValueError, match="must pair up one to one; got 10 and 9"):
        learn_whitening(X, q, p[:9])
    with pytest.raises(ValueError, match=r"N x D .* got shape \(4,\)"):
        learn_whitening(X[0], q, p)
    with pytest.raises(ValueError, match="all zero"):
        learn_whitening(X, q, q)


def test_learn_whitening_dim_is_lw_inside_the_leading_principal_subspace():
    X, q, p = planted_pairs(n_pairs=40, dim=6, n_extra=30)
    mean, P = learn_whitening(X, q, p, dim=3)
    assert P.shape == (3, 6)
    # Independently: project on the 3 leading principal axes of X, then cirtorch's Lw there.
    eigval, eigvec = np.linalg.eigh(np.cov(X, rowvar=False, bias=True))
    basis = eigvec[:, np.argsort(eigval)[::-1][:3]]
    _, P_sub = learn_whitening(X @ basis, q, p)
    np.testing.assert_allclose(np.abs(P), np.abs(P_sub @ basis.T), atol=1e-8)
    # Inside that subspace the pair differences are white.
    Z = (X[q] - X[p]) @ P.T
    np.testing.assert_allclose(Z.T @ Z / len(q), np.eye(3), atol=1e-9)


def test_learn_whitening_dim_needs_only_dim_pairs():
    X, q, p = planted_pairs(n_pairs=4, dim=6, n_extra=30)
    with pytest.raises(ValueError, match="at least 6 matching pairs"):
        learn_whitening(X, q, p)
    _, P = learn_whitening(X, q, p, dim=4)
    assert P.shape == (4, 6) and np.all(np.isfinite(P))


def test_learn_whitening_shrinkage_whitens_the_blended_covariance():
    X, q, p = planted_pairs(n_pairs=40, dim=5)
    mean, P = learn_whitening(X, q, p, shrinkage=0.25)
    diffs = X[q] - X[p]
    S = diffs.T @ diffs / len(q)
    blended = 0.75 * S + 0.25 * np.trace(S) / 5 * np.eye(5)
    # P whitens the blended covariance, so P^T P is its inverse.
    np.testing.assert_allclose(P.T @ P, np.linalg.inv(blended), rtol=1e-8)
    # Shrinkage lifts the weakest difference direction, so the largest magnification
    # (1 / sqrt of its eigenvalue) is smaller than plain Lw's.
    _, P_plain = learn_whitening(X, q, p)
    assert np.linalg.norm(P, 2) < 0.9 * np.linalg.norm(P_plain, 2)


def test_learn_whitening_shrinkage_works_with_fewer_pairs_than_dimensions():
    X, q, p = planted_pairs(n_pairs=3, dim=6, n_extra=30)
    _, P = learn_whitening(X, q, p, shrinkage=0.1)
    assert P.shape == (6, 6) and np.all(np.isfinite(P))


def test_pca_whitening_gives_identity_covariance_and_descending_eigenvalues():
    X = rotated_gaussian([10.0, 3.0, 1.0, 0.3])
    mean, P = pca_whitening(X)
    Y = (X - mean) @ P.T
    np.testing.assert_allclose(Y.T @ Y / len(X), np.eye(4), atol=1e-9)
    # P = diag(1/sqrt(eig)) V^T, so its row norms are 1/sqrt of the eigenvalues, descending.
    eigvals = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False, bias=True)))[::-1]
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), eigvals**-0.5, rtol=1e-9)


def test_pca_whitening_guards_rank_deficient_data():
    X = rotated_gaussian([1.0, 2.0, 3.0, 4.0, 5.0], n=3)  # 3 points span only 2 dimensions
    mean, P = pca_whitening(X)
    assert np.all(np.isfinite(P))
    Y = (X - mean) @ P[:2].T
    np.testing.assert_allclose(Y.T @ Y / len(X), np.eye(2), atol=1e-8)
    with pytest.raises(ValueError, match="zero variance"):
        pca_whitening(np.ones((4, 3)))


def test_dim_reduction_keeps_leading_components():
    rng = np.random.default_rng(2)
    # Almost all variance lies on axes 0 and 1.
    X = rng.standard_normal((400, 5)) * [10.0, 5.0, 0.1, 0.1, 0.1]
    mean, P = pca_whitening(X)
    leading = P[:2] / np.linalg.norm(P[:2], axis=1, keepdims=True)
    assert np.abs(leading[:, 2:]).max() < 0.05
    assert np.abs(leading[0, 0]) > 0.99 and np.abs(leading[1, 1]) > 0.99

    full = (X - mean) @ P.T
    expected = full[:, :2] / np.linalg.norm(full[:, :2], axis=1, keepdims=True)
    np.testing.assert_allclose(apply_whitening(X, mean, P, dim=2), expected, rtol=1e-10)


def test_apply_whitening_normalises_rows_and_keeps_float32():
    X, q, p = planted_pairs()
    mean, P = learn_whitening(X, q, p)
    Y = apply_whitening(X.astype(np.float32), mean, P)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-6)
    assert apply_whitening(X, mean, P).dtype == np.float64


def test_apply_whitening_input_errors():
    X, q, p = planted_pairs(dim=4)
    mean, P = learn_whitening(X, q, p)
    with pytest.raises(ValueError, match=r"dim must be between 1 and 4 .* got dim=5"):
        apply_whitening(X, mean, P, dim=5)
    with pytest.raises(ValueError, match=r"dim must be between 1 and 4 .* got dim=0"):
        whitening_layer(mean, P, dim=0)
    with pytest.raises(ValueError, match="X has 3 dimensions but the whitening expects 4"):
        apply_whitening(X[:, :3], mean, P)
    with pytest.raises(ValueError, match=r"mean must have shape \(4,\)"):
        apply_whitening(X, mean[:3], P)


def test_whitening_layer_equals_apply_before_normalisation():
    X, q, p = planted_pairs()
    mean, P = learn_whitening(X, q, p)
    layer = whitening_layer(mean, P, dim=3)
    assert (layer.in_features, layer.out_features) == (5, 3)
    assert layer.weight.requires_grad and layer.bias.requires_grad

    x = torch.from_numpy(X).float()
    with torch.no_grad():
        out = layer(x)
    expected = (X - mean) @ P[:3].T
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    normalised = torch.nn.functional.normalize(out, dim=1).numpy()
    np.testing.assert_allclose(normalised, apply_whitening(X, mean, P, dim=3), atol=1e-5)
