"""evaluate.py's local-feature extras: BoW beside the network's descriptor, pixel retrieval."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from retrieval.data import formats
from retrieval.eval.benchmarks import ExtractionSettings, evaluate_net
from retrieval.local.bow import Vocabulary, cached_vocabulary, evaluate_bow, soft_bow_net
from retrieval.local.localize import LocalizeOptions, pixel_evaluation
from retrieval.models.net import RetrievalNet
from retrieval.types import RetrievalBenchmark
from retrieval.viz.grids import pick_queries

log = logging.getLogger(__name__)

SFM_NAMES = ("synthetic-sfm", "retrieval-SfM-120k", "retrieval-SfM-30k")


def vocabulary_images(cfg: DictConfig, root: Path, fallback: list[Path]) -> list[Path]:
    """A seeded sample of `bow_images` training images (SfM train split), else of `fallback`."""
    names = [cfg.bow_data] if cfg.get("bow_data") else SFM_NAMES
    found = [n for n in names if formats.sfm_db_path(root, str(n)).is_file()]
    if found:
        paths = formats.load_sfm_db(root, str(found[0]), check_images=False)["train"].image_paths
    else:
        log.warning("no SfM training set under %s: the BoW vocabulary learns on the database", root)
        paths = list(fallback)
    rng = np.random.default_rng(int(cfg.seed))
    keep = np.sort(rng.permutation(len(paths))[: int(cfg.bow_images)])
    return [paths[i] for i in keep]


def learn_bow_vocabulary(
    cfg: DictConfig,
    net: RetrievalNet,
    root: Path,
    fallback: list[Path],
    settings: ExtractionSettings,
    cache_dir: Path | None,
    output_dir: Path,
) -> tuple[Vocabulary, Path]:
    """The vocabulary (cached), also written to ``output_dir/vocabulary.npz`` for pooling=bow."""
    vocabulary = cached_vocabulary(
        net,
        vocabulary_images(cfg, root, fallback),
        int(cfg.bow_words),
        settings,
        cache_dir.parent if cache_dir is not None else None,  # -> <cache>/vocabularies
        max_descriptors=int(cfg.bow_descriptors),
        seed=int(cfg.seed),
    )
    return vocabulary, vocabulary.save(output_dir / "vocabulary.npz")


def bow_results(
    cfg: DictConfig,
    net: RetrievalNet,
    benchmark: RetrievalBenchmark,
    vocabulary: Vocabulary,
    vocabulary_path: Path,
    settings: ExtractionSettings,
    cache_dir: Path | None,
) -> dict[str, dict[str, float]]:
    """Rows ``NAME/bow`` (hard tf-idf, inverted file) and ``NAME/bow-soft`` (pooling=bow)."""
    hard, _ = evaluate_bow(net, benchmark, vocabulary, settings)
    soft_net = soft_bow_net(net, vocabulary_path, float(cfg.bow_alpha))
    soft, _ = evaluate_net(soft_net, benchmark, settings, cache_dir)
    return {f"{benchmark.name}/bow": hard, f"{benchmark.name}/bow-soft": soft}


def pixel_results(
    cfg: DictConfig,
    net: RetrievalNet,
    benchmark: RetrievalBenchmark,
    ranks: np.ndarray,
    figures: dict[str, float],
    root: Path,
    settings: ExtractionSettings,
) -> tuple[dict[str, float], dict[tuple[int, int], np.ndarray]]:
    """Image-level Medium/Hard mAP beside the baseline's mIoU and pixel mAP, and the predicted
    masks of the results the grid shows."""
    node: Any = cfg.get("localize") or {}
    options = LocalizeOptions(
        similarity=str(node.get("similarity", "global")),
        threshold=node.get("threshold", 0.3),
        verify=bool(node.get("verify", False)),
    )
    shown = []
    if cfg.get("grid_queries"):
        for q in pick_queries(len(benchmark.queries), int(cfg.grid_queries)):
            shown += [(q, int(i)) for i in ranks[q, :10]]
    pixel, predictions = pixel_evaluation(
        net, benchmark, ranks, root, settings, options, extra_pairs=shown
    )
    row: dict[str, float] = {}
    for tag in ("M", "H"):
        row[f"{tag}/mAP"] = figures[f"{tag}/mAP"]
        row.update({k: v for k, v in pixel.items() if k.startswith(f"{tag}/")})
    return row, {pair: predictions[pair].mask for pair in shown}
