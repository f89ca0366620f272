"""The jobs' whitening: pair-count errors that name the config key, and train.py's layer that
starts from Lw on the training pairs (cirtorch's -w)."""

import logging

import numpy as np
import pytest
import torch

from retrieval.data import formats
from retrieval.extraction.extract import extract_descriptors
from retrieval.models.net import build_net
from retrieval.models.whitening import learn_whitening
from retrieval.pipelines.config import ConfigError
from retrieval.pipelines.whitening import (
    learn_projection,
    start_whitening_from_config,
    start_whitening_layer,
)


def _pairs(n_pairs: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_pairs, dim))
    X = np.vstack([centres, centres + 0.1 * rng.standard_normal((n_pairs, dim))])
    return X, np.arange(n_pairs), np.arange(n_pairs, 2 * n_pairs)


def test_too_few_pairs_name_the_dimension_key_and_a_value_that_works():
    X, q, p = _pairs(40, 64)
    with pytest.raises(ConfigError, match=r"40 matching pairs .*whitening_dim=N with N <= 40") as e:
        learn_projection("learned", X, q, p, dim=None, shrinkage=0.0)
    assert "whitening_dim=32" in str(e.value) and "whitening_shrinkage=0.3" in str(e.value)
    assert "whitening_data=NAME" in str(e.value)
    mean, P = learn_projection("learned", X, q, p, dim=32, shrinkage=0.0)
    assert P.shape == (32, 64)
    _, P = learn_projection("learned", X, q, p, dim=None, shrinkage=0.1)  # shrinkage is enough
    assert P.shape == (64, 64)
    with pytest.raises(ConfigError, match=r"`whitening_dim`: 65 exceeds the network's 64-D"):
        learn_projection("pca", X, q, p, dim=65, shrinkage=0.0)
    with pytest.raises(ConfigError, match=r"`whitening_shrinkage`: must be in \[0, 1\)"):
        learn_projection("learned", X, q, p, dim=8, shrinkage=1.5)


def test_pca_projection_keeps_the_leading_dim_rows():
    X, q, p = _pairs(50, 16)
    _, P = learn_projection("pca", X, q, p, dim=4, shrinkage=0.0)
    eigval = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False, bias=True)))[::-1]
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), eigval[:4] ** -0.5, rtol=1e-8)


@pytest.fixture
def whitened_net():
    torch.manual_seed(0)
    return build_net("efficientnet_lite0", "gem", {"p": 3.0}, weights="imagenet", whitening=16)


def test_train_whitening_layer_starts_from_lw_on_the_training_pairs(whitened_net, tiny_world):
    path = formats.sfm_whiten_path(tiny_world, "synthetic-sfm")
    pairs = formats.read_whiten_pairs(path)
    options = {"max_side": 64, "batch_size": 16, "progress": False}
    start_whitening_layer(whitened_net, "learned", path, 0.0, **options)

    # Independently: the pooled descriptors (no whitening layer) and Lw reduced to 32 dims.
    plain = build_net("efficientnet_lite0", "gem", {"p": 3.0}, weights="imagenet")
    plain.load_state_dict(
        {k: v for k, v in whitened_net.state_dict().items() if not k.startswith("whitening")}
    )
    pooled = extract_descriptors(plain, pairs.image_paths, **options)
    mean, P = learn_whitening(pooled, pairs.qidxs, pairs.pidxs, dim=16)
    weight = whitened_net.whitening.weight.detach().numpy()
    bias = whitened_net.whitening.bias.detach().numpy()
    np.testing.assert_allclose(weight, P, rtol=1e-3, atol=1e-3 * np.abs(P).max())
    np.testing.assert_allclose(bias, -P @ mean, rtol=1e-3, atol=1e-3 * np.abs(P @ mean).max())
    # The layer whitens the training pairs' differences (before its L2 normalisation).
    Z = pooled @ weight.T
    diffs = Z[pairs.qidxs] - Z[pairs.pidxs]
    np.testing.assert_allclose(diffs.T @ diffs / len(diffs), np.eye(16), atol=2e-2)


def test_identity_init_and_missing_pairs_keep_the_identity(whitened_net, tmp_path, caplog):
    identity = whitened_net.whitening.weight.detach().clone()
    start_whitening_layer(whitened_net, "identity", tmp_path / "none.pkl", 0.0)
    with caplog.at_level(logging.WARNING, logger="retrieval.pipelines.whitening"):
        start_whitening_layer(whitened_net, "learned", tmp_path / "none.pkl", 0.0)
    assert "starts as the identity" in caplog.text and "whitening_init=identity" in caplog.text
    assert torch.equal(whitened_net.whitening.weight, identity)
    with pytest.raises(ConfigError, match=r"`whitening_init`: 'lw'; valid: learned, identity"):
        start_whitening_layer(whitened_net, "lw", None, 0.0)


def test_train_config_learns_the_layer_from_the_world_it_trains_on(
    whitened_net, tiny_world, train_config
):
    cfg = train_config("debug=tiny", "whitening=16")
    before = whitened_net.whitening.weight.detach().clone()
    start_whitening_from_config(cfg, whitened_net, tiny_world, progress=False)
    assert not torch.allclose(whitened_net.whitening.weight, before)
    cfg.whitening_shrinkage = 0.0  # cirtorch's Lw: 30 pairs cannot make a 64-D layer
    with pytest.raises(ConfigError, match=r"30 matching pairs .* whitening=N with N <= 30"):
        wide = build_net("efficientnet_lite0", "gem", {"p": 3.0}, weights="imagenet", whitening=64)
        start_whitening_from_config(cfg, wide, tiny_world, progress=False)
