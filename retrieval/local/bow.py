"""Bag of visual words over local CNN features: vocabulary, tf-idf and an inverted file.

Each position of a backbone's feature map is a local descriptor (L2-normalised, see
:mod:`retrieval.local.features`). A vocabulary of K words is learned with FAISS spherical k-means
on descriptors of training images; every descriptor is hard-assigned to its nearest word
(largest cosine). An image is the tf-idf vector of its words (Sivic & Zisserman 2003):
tf = word count / number of descriptors, idf = log(N / N_k) with N_k the number of database
images holding word k (0 for words no database image holds), L2-normalised, so that a query's
score is the cosine of the two vectors. The inverted file keeps, for every word, the database
images holding it and their weights; a query visits only the lists of its own words.

The soft-assignment counterpart, trainable like any pooling, is ``pooling=bow``
(:class:`retrieval.models.pooling.SoftBoW`); the vocabulary file written here initialises its
codebook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from retrieval.atomic import atomic_write
from retrieval.eval.benchmarks import ExtractionSettings, score_ranks
from retrieval.extraction.cache import cache_key_hash, extraction_key
from retrieval.local.features import iter_feature_maps, local_descriptors
from retrieval.models.net import RetrievalNet, build_net
from retrieval.types import RetrievalBenchmark

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# vocabulary and assignment
# --------------------------------------------------------------------------------------------


@dataclass
class Vocabulary:
    """K visual words: unit centroids (K x C float32) and an idf per word (K,)."""

    centroids: np.ndarray
    idf: np.ndarray

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self.idf = np.asarray(self.idf, dtype=np.float32).reshape(-1)
        if self.centroids.ndim != 2 or len(self.idf) != len(self.centroids):
            raise ValueError(
                f"vocabulary: centroids must be K x C with one idf per word, got "
                f"{self.centroids.shape} and {self.idf.shape}"
            )

    @property
    def num_words(self) -> int:
        return len(self.centroids)

    def save(self, path: str | Path) -> Path:
        """Write ``centroids`` and ``idf`` to an .npz (atomically); pooling=bow reads it."""
        return atomic_write(path, lambda h: np.savez(h, centroids=self.centroids, idf=self.idf))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary .npz written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(data["centroids"], data["idf"])


def learn_centroids(
    descriptors: np.ndarray, num_words: int, niter: int = 20, seed: int = 0
) -> np.ndarray:
    """K unit centroids of unit descriptors (N x C) by FAISS spherical k-means."""
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(x) < num_words:
        raise ValueError(
            f"k-means of {num_words} words needs at least as many descriptors, got {len(x)}; "
            "use more images or fewer words"
        )
    kmeans = faiss.Kmeans(x.shape[1], int(num_words), niter=niter, seed=seed, spherical=True)
    kmeans.train(x)
    return kmeans.centroids


def assign_words(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest word (largest inner product) of every descriptor (N,), int64."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(np.ascontiguousarray(descriptors, dtype=np.float32), 1)
    return nearest[:, 0].astype(np.int64)


def document_frequency_idf(word_lists: Sequence[np.ndarray], num_words: int) -> np.ndarray:
    """idf_k = log(N / N_k) over N documents (word-id arrays); 0 for words none holds."""
    holders = np.zeros(num_words, dtype=np.int64)
    for words in word_lists:
        holders[np.unique(words)] += 1
    idf = np.zeros(num_words, dtype=np.float64)
    seen = holders > 0
    idf[seen] = np.log(len(word_lists) / holders[seen])
    return idf.astype(np.float32)


def tfidf_vector(words: np.ndarray, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sparse L2-normalised tf-idf vector of one image: (word ids, weights), ids ascending."""
    ids, counts = np.unique(np.asarray(words, dtype=np.int64), return_counts=True)
    weights = counts / max(1, len(words)) * idf[ids]
    keep = weights > 0
    ids, weights = ids[keep], weights[keep]
    norm = np.linalg.norm(weights)
    return ids, (weights / norm if norm > 0 else weights).astype(np.float32)


class InvertedFile:
    """Inverted file of database images' tf-idf vectors: per word, (image, weight) postings."""

    def __init__(self, num_words: int, database_words: Sequence[np.ndarray]) -> None:
        self.num_words = int(num_words)
        self.size = len(database_words)
        self.idf = document_frequency_idf(database_words, self.num_words)
        vectors = [tfidf_vector(words, self.idf) for words in database_words]
        word = np.concatenate([ids for ids, _ in vectors] or [np.empty(0, np.int64)])
        image = np.repeat(np.arange(self.size), [len(ids) for ids, _ in vectors])
        weight = np.concatenate([w for _, w in vectors] or [np.empty(0, np.float32)])
        order = np.argsort(word, kind="stable")  # postings grouped by word, images ascending
        self.images, self.weights = image[order], weight[order]
        self.offsets = np.searchsorted(word[order], np.arange(self.num_words + 1))

    def scores(self, query_words: np.ndarray) -> np.ndarray:
        """Cosine of a query's tf-idf vector with every database image (N,)."""
        ids, q_weights = tfidf_vector(query_words, self.idf)
        starts, stops = self.offsets[ids], self.offsets[ids + 1]
        lengths = stops - starts
        if lengths.sum() == 0:
            return np.zeros(self.size, dtype=np.float32)
        postings = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
        contributions = self.weights[postings] * np.repeat(q_weights, lengths)
        return np.bincount(self.images[postings], contributions, self.size).astype(np.float32)

    def search(self, queries_words: Sequence[np.ndarray]) -> np.ndarray:
        """Full rankings (Q x N database indices, best first; ties by index) of the queries."""
        ranks = np.empty((len(queries_words), self.size), dtype=np.int64)
        for q, words in enumerate(queries_words):
            ranks[q] = np.argsort(-self.scores(words), kind="stable")
        return ranks


# --------------------------------------------------------------------------------------------
# networks and benchmarks
# --------------------------------------------------------------------------------------------


def image_words(
    net: RetrievalNet,
    paths: Sequence[str | Path],
    centroids: np.ndarray,
    settings: ExtractionSettings,
    boxes: Sequence | None = None,
    desc: str = "bow",
) -> list[np.ndarray]:
    """Word ids of every feature-map position of every image (queries cropped to `boxes`)."""
    words: list[np.ndarray] = [np.empty(0, np.int32)] * len(paths)
    for i, fmap in iter_feature_maps(
        net,
        paths,
        settings.image_size,
        boxes=boxes,
        batch_size=settings.batch_size,
        device=settings.device,
        progress=settings.progress,
        desc=desc,
        num_workers=settings.num_workers,
    ):
        # int32 keeps a million images' words in memory (768 per image at 1024 px)
        words[i] = assign_words(local_descriptors(fmap), centroids).astype(np.int32)
    return words


def learn_vocabulary(
    net: RetrievalNet,
    paths: Sequence[str | Path],
    num_words: int,
    settings: ExtractionSettings,
    max_descriptors: int = 100_000,
    seed: int = 0,
) -> Vocabulary:
    """Vocabulary from the local descriptors of training images (a seeded subsample for
    k-means); the idf counts those images as the documents."""
    descriptors: list[np.ndarray] = [np.empty(0)] * len(paths)
    for i, fmap in iter_feature_maps(
        net,
        paths,
        settings.image_size,
        batch_size=settings.batch_size,
        device=settings.device,
        progress=settings.progress,
        desc="bow vocabulary",
        num_workers=settings.num_workers,
    ):
        descriptors[i] = local_descriptors(fmap)
    pool = np.concatenate(descriptors)
    rng = np.random.default_rng(seed)
    sample = pool[np.sort(rng.permutation(len(pool))[:max_descriptors])]
    log.info("k-means of %d words on %d local descriptors", num_words, len(sample))
    centroids = learn_centroids(sample, num_words, seed=seed)
    idf = document_frequency_idf([assign_words(d, centroids) for d in descriptors], num_words)
    return Vocabulary(centroids, idf)


def cached_vocabulary(
    net: RetrievalNet,
    paths: Sequence[str | Path],
    num_words: int,
    settings: ExtractionSettings,
    cache_dir: str | Path | None,
    max_descriptors: int = 100_000,
    seed: int = 0,
) -> Vocabulary:
    """:func:`learn_vocabulary`, stored under ``cache_dir/vocabularies`` keyed by the backbone's
    weights, the images and the settings."""
    if cache_dir is None:
        return learn_vocabulary(net, paths, num_words, settings, max_descriptors, seed)
    key = extraction_key(
        net.backbone,
        "bow-vocabulary",
        paths,
        num_words=num_words,
        max_side=settings.image_size,
        max_descriptors=max_descriptors,
        seed=seed,
    )
    path = Path(cache_dir) / "vocabularies" / f"{cache_key_hash(key)}.npz"
    if path.is_file():
        log.info("loaded cached vocabulary %s", path)
        return Vocabulary.load(path)
    vocabulary = learn_vocabulary(net, paths, num_words, settings, max_descriptors, seed)
    vocabulary.save(path)
    return vocabulary


def evaluate_bow(
    net: RetrievalNet,
    benchmark: RetrievalBenchmark,
    vocabulary: Vocabulary,
    settings: ExtractionSettings,
) -> tuple[dict[str, float], np.ndarray]:
    """Hard-assignment tf-idf BoW with an inverted file on a benchmark: (figures, ranks)."""
    db_words = image_words(net, benchmark.images, vocabulary.centroids, settings, desc="bow db")
    boxes = list(benchmark.query_boxes)
    query_words = image_words(
        net,
        benchmark.queries,
        vocabulary.centroids,
        settings,
        boxes=boxes if any(b is not None for b in boxes) else None,
        desc="bow queries",
    )
    ranks = InvertedFile(vocabulary.num_words, db_words).search(query_words)
    return score_ranks(benchmark, ranks), ranks


def soft_bow_net(net: RetrievalNet, vocabulary_path: str | Path, alpha: float) -> RetrievalNet:
    """`net`'s backbone with a soft-assignment BoW pooling initialised from a vocabulary."""
    bow_net = build_net(
        net.meta["backbone"],
        "bow",
        {"vocabulary": str(vocabulary_path), "alpha": float(alpha)},
        weights="none",
    )
    bow_net.backbone.load_state_dict(net.backbone.state_dict())
    return bow_net
