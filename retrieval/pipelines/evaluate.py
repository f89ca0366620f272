"""The evaluation job: a checkpoint or an off-the-shelf network on one or more benchmarks."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from retrieval.checkpoint import load_checkpoint
from retrieval.data import formats
from retrieval.eval.benchmarks import BENCHMARKS, ExtractionSettings, evaluate_net, load_benchmark
from retrieval.eval.postprocess import alpha_query_expansion, database_augmentation
from retrieval.extraction.cache import cached_extract, extraction_key
from retrieval.extraction.extract import extract_descriptors
from retrieval.extraction.inference import resolve_device
from retrieval.index import INDEX_TYPES
from retrieval.models.net import RetrievalNet
from retrieval.models.whitening import apply_whitening
from retrieval.pipelines.bow_pixel import bow_results, learn_bow_vocabulary, pixel_results
from retrieval.pipelines.config import (
    ConfigError,
    build_net_from_config,
    extract_options,
    validate_network_config,
    worlds_dir,
)
from retrieval.pipelines.known_keys import check_known_keys
from retrieval.pipelines.loggers import log_final_results
from retrieval.pipelines.report import markdown_table
from retrieval.pipelines.whitening import WHITENINGS, default_whitening_data, learn_projection
from retrieval.viz.grids import benchmark_grid

log = logging.getLogger(__name__)


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Check every evaluate.yaml value that would otherwise fail late or silently."""
    check_known_keys(cfg, "evaluate")  # `+synthetic.seedd=3` would be silently ignored
    for key, example in (("image_size", 1024), ("batch_size", 16)):
        _check(cfg, key, partial(_is_int, minimum=1), f"a positive integer (e.g. {example})")
    _check(cfg, "topk", _is_null_or_positive_int, "null (the full ranking) or > 0 (e.g. 100)")
    for key in ("qe_k", "dba_k"):
        _check(cfg, key, partial(_is_int, minimum=0), "0 (off) or a positive integer (e.g. 2)")
    _check(cfg, "qe_alpha", lambda v: _is_number(v) and v >= 0, "a number >= 0 (e.g. 3.0)")
    _check(
        cfg,
        "scales",
        lambda v: len(v) > 0 and all(_is_number(s) and s > 0 for s in v),
        "a non-empty list of positive factors (e.g. [1.0, 0.7071, 0.5])",
    )
    _check(cfg, "index", lambda v: v in INDEX_TYPES, f"one of {', '.join(INDEX_TYPES)}")
    _check(cfg, "whitening", lambda v: v in WHITENINGS, "null, learned or pca")
    _check(cfg, "whitening_dim", _is_null_or_positive_int, "null (all) or > 0 (e.g. 512)")
    _check(
        cfg,
        "whitening_shrinkage",
        lambda v: _is_number(v) and 0 <= v < 1,
        "a number in [0, 1) (e.g. 0.1; 0: cirtorch's Lw)",
    )
    _warn_if_old_data_root(cfg)
    _check_data_root_is_set(cfg)


def data_root_setting(cfg: DictConfig) -> str | None:
    """The configured data root: paths.data_root, unless the deprecated `data_root` is given."""
    return cfg.get("data_root") or OmegaConf.select(cfg, "paths.data_root")


def _warn_if_old_data_root(cfg: DictConfig) -> None:
    if cfg.get("data_root"):  # evaluate.py's own spelling before the paths group; one release
        warnings.warn(
            f"`data_root={cfg.data_root}` is deprecated and will be removed in the next release: "
            f"use `paths.data_root={cfg.data_root}` (it sets train.py's data.root too).",
            FutureWarning,
            stacklevel=2,
        )


def _check_data_root_is_set(cfg: DictConfig) -> None:
    """A downloaded benchmark without a data root would be looked up in the synthetic world."""
    if data_root_setting(cfg):
        return
    for name in map(str, cfg.get("datasets") or []):
        if name in BENCHMARKS and name != "generic" and not name.startswith("synthetic"):
            dataset = name.partition("+")[0]
            raise ConfigError(
                f"datasets=[{name}] needs the data root: set paths.data_root=DIR, the folder "
                f"holding test/{dataset} (e.g. paths.data_root=/data). Download it with "
                f"`{formats.download_command(dataset, 'DIR')}`."
            )


def _check(cfg: DictConfig, key: str, valid: Callable[[Any], bool], rule: str) -> None:
    """Raise a ConfigError naming `key` and a valid value unless `valid(cfg[key])`."""
    value = cfg.get(key)
    try:
        ok = bool(valid(value))
    except TypeError:  # e.g. scales=3: not a list
        ok = False
    if not ok:
        raise ConfigError(f"Invalid config `{key}`: must be {rule}, got {value!r}.")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_null_or_positive_int(value: Any) -> bool:
    return value is None or _is_int(value, 1)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_network(cfg: DictConfig) -> RetrievalNet:
    """The checkpoint's network, or the one the backbone/pooling groups describe."""
    if cfg.get("checkpoint"):
        return load_checkpoint(str(cfg.checkpoint))
    validate_network_config(cfg)
    return build_net_from_config(cfg)


def evaluation_root(cfg: DictConfig) -> Path:
    """The data root: the configured one, or the synthetic world."""
    configured = data_root_setting(cfg)
    if configured:
        return Path(str(configured)).expanduser()
    from retrieval.data.synthetic import SyntheticConfig, ensure_world

    config = SyntheticConfig(**OmegaConf.to_container(cfg.synthetic))
    return ensure_world(None, config, base=worlds_dir(cfg))


def benchmark_root(name: str, root: Callable[[], Path]) -> Path:
    """The data root a benchmark reads; generic reads generic_root instead, so none is made."""
    return Path() if name == "generic" else root()


def whitening_postprocess(
    cfg: DictConfig,
    net: RetrievalNet,
    data_root: Callable[[], Path],
    settings: ExtractionSettings,
    cache_dir: Path | None,
) -> Any:
    """A (database, queries) -> whitened pair function, learned once and cached, or None."""
    kind = cfg.get("whitening")
    if kind not in WHITENINGS:
        raise ValueError(f"Invalid config `whitening`: {kind!r}; valid: null, learned, pca")
    if kind is None:
        return None
    root = data_root()
    name = str(cfg.get("whitening_data") or default_whitening_data(root))
    pairs = formats.read_whiten_pairs(formats.sfm_whiten_path(root, name))
    options = settings.key_options(net)
    key = extraction_key(net, f"{name}/whitening", pairs.image_paths, **options)
    descriptors = cached_extract(
        cache_dir,
        key,
        lambda: extract_descriptors(
            net,
            pairs.image_paths,
            desc=f"{name} whitening",
            **options,
            **settings.speed_options(),
        ),
    )
    mean, projection = learn_projection(
        kind,
        descriptors,
        pairs.qidxs,
        pairs.pidxs,
        dim=cfg.get("whitening_dim"),
        shrinkage=float(cfg.get("whitening_shrinkage", 0.3)),
    )

    def whiten(database: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            apply_whitening(database, mean, projection),
            apply_whitening(queries, mean, projection),
        )

    return whiten


def expand(
    cfg: DictConfig, database: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Optional database-side augmentation, then alpha query expansion (both off by default)."""
    if int(cfg.dba_k) > 0:
        database = database_augmentation(database, k=int(cfg.dba_k), alpha=float(cfg.qe_alpha))
    if int(cfg.qe_k) > 0:
        queries = alpha_query_expansion(
            queries, database, k=int(cfg.qe_k), alpha=float(cfg.qe_alpha)
        )
    return database, queries


def extraction_settings(cfg: DictConfig) -> ExtractionSettings:
    """How the configured job extracts descriptors (the `extract` node checked too)."""
    return ExtractionSettings(
        image_size=int(cfg.image_size),
        scales=tuple(float(s) for s in cfg.scales),
        batch_size=int(cfg.batch_size),
        device=resolve_device(str(cfg.device)),
        **extract_options(cfg),
    )


def run_evaluation(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Evaluate on every configured benchmark; write results.json and the ranks."""
    validate_evaluate_config(cfg)
    settings = extraction_settings(cfg)
    net = load_network(cfg)
    # The synthetic world takes minutes to generate: only when a dataset reads the data root.
    root = cache(partial(evaluation_root, cfg))
    output_dir = Path(str(cfg.output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(str(cfg.cache_dir)) / "descriptors" if cfg.get("cache_dir") else None
    whiten = whitening_postprocess(cfg, net, root, settings, cache_dir)

    def postprocess(database: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if whiten is not None:
            database, queries = whiten(database, queries)
        return expand(cfg, database, queries)

    results: dict[str, dict[str, float]] = {}
    pictures: dict[str, Path] = {}  # logged with the figures
    vocabulary = None
    for name in cfg.datasets:
        name = str(name)
        benchmark = load_benchmark(name, benchmark_root(name, root), cfg.get("generic_root"))
        figures, ranks = evaluate_net(
            net,
            benchmark,
            settings,
            cache_dir,
            topk=cfg.get("topk"),
            index_type=str(cfg.index),
            postprocess=postprocess,
        )
        if cfg.get("topk") and ranks.shape[1] < len(benchmark.images):
            log.info(
                "%s: ranks truncated to the top %d of %d images",
                benchmark.name,
                ranks.shape[1],
                len(benchmark.images),
            )
        results[benchmark.name] = figures
        if cfg.get("bow"):  # BoW over the same backbone's local features, learned once
            vocabulary = vocabulary or learn_bow_vocabulary(
                cfg, net, root(), benchmark.images, settings, cache_dir, output_dir
            )
            results.update(bow_results(cfg, net, benchmark, *vocabulary, settings, cache_dir))
        masks = None
        if cfg.get("pixel") and benchmark.protocol == "revisited":
            results[f"{benchmark.name}/pixel"], masks = pixel_results(
                cfg, net, benchmark, ranks, figures, root(), settings
            )
        np.save(output_dir / f"ranks_{benchmark.name}.npy", ranks)
        if cfg.get("grid_queries"):
            pictures[f"grid_{benchmark.name}"] = benchmark_grid(
                benchmark,
                ranks,
                output_dir / f"grid_{benchmark.name}.png",
                n_queries=int(cfg.grid_queries),
                masks=masks,
            )
    payload = {
        "results": results,
        "network": net.meta,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (output_dir / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    flat = {f"{name}/{key}": v for name, row in results.items() for key, v in row.items()}
    log_final_results(cfg, flat, pictures)
    return results


def format_results(results: dict[str, dict[str, float]]) -> str:
    """The results as Markdown: consecutive rows with the same figures share a table (a
    benchmark and its BoW rows), other protocols and the pixel figures get their own."""
    tables: list[dict[str, dict[str, float]]] = []
    for name, figures in results.items():
        if tables and list(next(iter(tables[-1].values()))) == list(figures):
            tables[-1][name] = figures
        else:
            tables.append({name: figures})
    return "\n\n".join(markdown_table(rows) for rows in tables)
