"""Bag of words: toy vocabulary assignment, tf-idf and the inverted file by hand; the soft BoW
pooling's gradient, its hard limit, masks, and its place in the network and checkpoints."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrieval.checkpoint import load_checkpoint, save_checkpoint
from retrieval.local.bow import (
    InvertedFile,
    Vocabulary,
    assign_words,
    document_frequency_idf,
    learn_centroids,
    tfidf_vector,
)
from retrieval.models.functional import soft_bow
from retrieval.models.net import build_net
from retrieval.models.pooling import POOLINGS, SoftBoW, build_pooling

# Three words on the unit circle: east, north, west.
WORDS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)


def test_assign_words_picks_the_largest_cosine():
    x = np.array([[0.9, 0.1], [0.2, 0.98], [-0.7, -0.7], [0.6, -0.8]], dtype=np.float32)
    np.testing.assert_array_equal(assign_words(x, WORDS), [0, 1, 2, 0])


def test_idf_and_tfidf_by_hand():
    docs = [np.array([0, 0, 1]), np.array([0, 2]), np.array([0, 0, 0, 0])]
    idf = document_frequency_idf(docs, 4)
    # word 0 in all 3 documents, words 1 and 2 in one each, word 3 in none
    np.testing.assert_allclose(idf, [0.0, np.log(3), np.log(3), 0.0], rtol=1e-6)
    ids, weights = tfidf_vector(np.array([1, 2, 2, 0]), idf)
    # tf = (1/4, 1/4, 2/4) for words (0, 1, 2); word 0 has idf 0 and is dropped
    raw = np.array([0.25, 0.5]) * np.log(3)
    np.testing.assert_array_equal(ids, [1, 2])
    np.testing.assert_allclose(weights, raw / np.linalg.norm(raw), rtol=1e-6)
    ids, weights = tfidf_vector(np.array([0, 0]), idf)  # only a stop word: empty vector
    assert ids.size == 0 and weights.size == 0


def test_inverted_file_equals_dense_cosine_of_tfidf_vectors():
    rng = np.random.default_rng(0)
    k = 12
    db = [rng.integers(0, k, size=rng.integers(1, 30)) for _ in range(25)]
    queries = [rng.integers(0, k, size=8) for _ in range(5)] + [np.array([], dtype=np.int64)]
    ivf = InvertedFile(k, db)

    def dense(words: np.ndarray) -> np.ndarray:
        v = np.zeros(k)
        ids, w = tfidf_vector(words, ivf.idf)
        v[ids] = w
        return v

    matrix = np.stack([dense(w) for w in db])
    for words in queries:
        np.testing.assert_allclose(ivf.scores(words), matrix @ dense(words), atol=1e-6)
    ranks = ivf.search(queries)
    assert ranks.shape == (6, 25)
    expected = np.argsort(-(matrix @ dense(queries[0])).astype(np.float32), kind="stable")
    np.testing.assert_array_equal(ranks[0], expected)
    np.testing.assert_array_equal(ranks[-1], np.arange(25))  # no words: ties by index


def test_inverted_file_postings_list_only_holders():
    db = [np.array([0, 0, 1]), np.array([1]), np.array([2, 2])]
    ivf = InvertedFile(4, db)
    # word 1 is held by images 0 and 1, word 3 by none
    assert ivf.images[ivf.offsets[1] : ivf.offsets[2]].tolist() == [0, 1]
    assert ivf.offsets[3] == ivf.offsets[4]
    # a query of word 2 only scores image 2
    assert np.flatnonzero(ivf.scores(np.array([2]))).tolist() == [2]


def test_kmeans_vocabulary_finds_toy_clusters(tmp_path):
    rng = np.random.default_rng(0)
    points = np.concatenate([w + 0.05 * rng.standard_normal((200, 2)) for w in WORDS])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    centroids = learn_centroids(points.astype(np.float32), 3, seed=1)
    assert np.sort(assign_words(WORDS, centroids)).tolist() == [0, 1, 2]
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="needs at least as many descriptors"):
        learn_centroids(points[:2].astype(np.float32), 3)
    vocabulary = Vocabulary(centroids, np.arange(3))
    back = Vocabulary.load(vocabulary.save(tmp_path / "v.npz"))
    np.testing.assert_array_equal(back.centroids, vocabulary.centroids)
    assert back.num_words == 3


# --------------------------------------------------------------------------------------------
# soft assignment pooling
# --------------------------------------------------------------------------------------------


def _map(b: int = 2, c: int = 2, h: int = 3, w: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=torch.float64) - 0.3


def test_soft_bow_gradient_matches_finite_differences():
    x = _map().requires_grad_(True)
    codebook = torch.tensor(WORDS, dtype=torch.float64).requires_grad_(True)
    idf = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, c: soft_bow(a, c, alpha=3.0, idf=idf), (x, codebook))
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 2:, 3:] = False
    assert torch.autograd.gradcheck(lambda a, c: soft_bow(a, c, 3.0, mask=mask), (x, codebook))


def test_soft_bow_tends_to_the_hard_tf_histogram():
    x = _map(b=1, h=2, w=3)
    soft = soft_bow(x, torch.tensor(WORDS, dtype=torch.float64), alpha=1e4)
    local = F.normalize(x.flatten(2)[0].T, dim=1).numpy().astype(np.float32)
    hard = np.bincount(assign_words(local, WORDS), minlength=3) / 6
    np.testing.assert_allclose(soft[0].numpy(), hard, atol=1e-6)


def test_soft_bow_mask_equals_pooling_the_valid_part_alone():
    x = _map(b=1, h=3, w=4)
    codebook = torch.tensor(WORDS, dtype=torch.float64)
    padded = torch.full((1, 2, 5, 6), 9.0, dtype=torch.float64)
    padded[:, :, :3, :4] = x
    mask = torch.zeros(1, 5, 6, dtype=torch.bool)
    mask[:, :3, :4] = True
    torch.testing.assert_close(soft_bow(padded, codebook, mask=mask), soft_bow(x, codebook))
    with pytest.raises(ValueError, match="codebook must be K x C with C=2"):
        soft_bow(x, codebook.T)


def test_soft_bow_module_registry_and_checks(tmp_path):
    assert POOLINGS["bow"] is SoftBoW
    pool = build_pooling("bow", num_words=5, in_dim=2)
    assert pool.out_dim(2) == 5 and pool(_map().float()).shape == (2, 5)
    assert pool.codebook.requires_grad and "num_words=5" in repr(pool)
    with pytest.raises(ValueError, match="backbone gives 3"):
        pool.out_dim(3)
    with pytest.raises(ValueError, match="needs num_words and in_dim"):
        SoftBoW(num_words=5)
    path = Vocabulary(WORDS, [1.0, 2.0, 3.0]).save(tmp_path / "v.npz")
    loaded = SoftBoW(vocabulary=str(path))
    torch.testing.assert_close(loaded.codebook.data, torch.tensor(WORDS))
    torch.testing.assert_close(loaded.idf, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="num_words=4 but the vocabulary"):
        SoftBoW(num_words=4, vocabulary=str(path))
    with pytest.raises(FileNotFoundError, match="evaluate.py bow=true"):
        SoftBoW(vocabulary=str(tmp_path / "missing.npz"))


def test_bow_network_checkpoint_rebuilds_without_the_vocabulary(tmp_path):
    torch.manual_seed(0)
    centroids = F.normalize(torch.randn(16, 512), dim=1).numpy()
    path = Vocabulary(centroids, np.linspace(0.5, 2.0, 16)).save(tmp_path / "v.npz")
    net = build_net("resnet18", "bow", {"vocabulary": str(path), "alpha": 20.0}).eval()
    assert net.meta["out_dim"] == 16 and net.meta["pooling_args"]["vocabulary"] is None
    x = torch.rand(2, 3, 64, 64)
    expected = net(x)
    torch.testing.assert_close(expected.norm(dim=1), torch.ones(2))
    ckpt = save_checkpoint(tmp_path / "model.pt", net)
    path.unlink()  # the codebook and idf travel in the state dict
    torch.testing.assert_close(load_checkpoint(ckpt).eval()(x), expected)
    # without a vocabulary, build_net gives the codebook the backbone's width
    assert build_net("resnet18", "bow", {"num_words": 8}).pooling.codebook.shape == (8, 512)
