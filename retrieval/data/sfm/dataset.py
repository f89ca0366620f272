"""Models to a training set in retrieval-SfM-120k's format: cids, cluster = model, train/val
split by model, query-positive pairs by the published rule, the positives sidecar with
shared-point counts, the whitening pairs and the images."""

from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from retrieval.atomic import atomic_write
from retrieval.data import formats
from retrieval.data.sfm.models import PairStatistics, directed_positives
from retrieval.data.sfm.options import SfmOptions


@dataclass
class Model:
    """One kept 3D model: its images (cids) and the statistics of its image pairs."""

    model_id: int  # COLMAP's model index
    cids: list[str]
    pairs: PairStatistics
    points3d: int


def split_models(n_models: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the models held out for validation; training keeps at least two (a query
    needs negatives from another model) and validation gets one where three or more exist."""
    n_val = int(round(val_fraction * n_models))
    if val_fraction > 0 and n_models >= 3:
        n_val = max(n_val, 1)
    n_val = max(0, min(n_val, n_models - 2))
    val = np.zeros(n_models, dtype=bool)
    val[np.random.default_rng([seed, 0x5F1]).permutation(n_models)[:n_val]] = True
    return val


def _split(models: list[Model], clusters: list[int], options: SfmOptions, rng) -> dict:
    """One split's arrays: images, clusters, query-positive pairs, candidates, whitening pairs."""
    cids, cluster, qidxs, pidxs, candidates, whiten = [], [], [], [], [], set()
    for model, label in zip(models, clusters, strict=True):
        offset, n = len(cids), len(model.cids)
        cids += model.cids
        cluster += [label] * n
        query, positive, shared = directed_positives(
            model.pairs, options.min_overlap, options.max_scale, options.min_shared
        )
        for q in range(n):
            mine = np.flatnonzero(query == q)
            order = mine[np.argsort(-shared[mine], kind="stable")]
            candidates.append([(offset + int(positive[i]), int(shared[i])) for i in order])
            if order.size:
                qidxs.append(offset + q)
                pidxs.append(offset + int(positive[rng.choice(order)]))
        low, high = offset + np.minimum(query, positive), offset + np.maximum(query, positive)
        whiten |= set(zip(low.tolist(), high.tolist(), strict=True))
    pairs = sorted(whiten)
    return {
        "cids": cids,
        "cluster": cluster,
        "qidxs": qidxs,
        "pidxs": pidxs,
        "candidates": candidates,
        "whiten": ([int(a) for a, _ in pairs], [int(b) for _, b in pairs]),
    }


def _link(source: Path, target: Path) -> None:
    """Hard-link a prepared image into the training set (copied where links are impossible)."""
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        atomic_write(target, lambda handle: shutil.copyfileobj(source.open("rb"), handle))


def _write_image_table(path: Path, rows: list[tuple[str, str, str, int]]) -> None:
    """cid -> source photo, split and model: the user's way back to their files."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["cid", "source", "split", "model"])
    writer.writerows(rows)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))


def write_dataset(
    root: Path, models: list[Model], image_dir: Path, sources: dict[str, str], options: SfmOptions
) -> dict:
    """Write the training set ``root/train/<name>``; the tuple database is written last."""
    name, folder = options.name, formats.sfm_dir(root, options.name)
    # The database marks a complete set: gone while its sidecars change, back when all agree.
    formats.sfm_db_path(root, name).unlink(missing_ok=True)
    is_val = split_models(len(models), options.val_fraction, options.seed)
    rng = np.random.default_rng([options.seed, 0x9D5])
    splits = {}
    for split, chosen in (("train", ~is_val), ("val", is_val)):
        kept = [m for m, c in zip(models, chosen, strict=True) if c]
        if kept:
            labels = [k for k, c in enumerate(chosen) if c]
            splits[split] = _split(kept, labels, options, rng)
    rows = [
        (cid, sources[cid], split, models[label].model_id)
        for split, data in splits.items()
        for cid, label in zip(data["cids"], data["cluster"], strict=True)
    ]
    for cid, *_ in tqdm(rows, desc="sfm: dataset", unit="img"):
        _link(image_dir / f"{cid}.jpg", formats.cid2filename(cid, folder / "ims"))
    train = splits["train"]
    formats.write_positives_sidecar(folder / f"{name}-positives.npz", train["candidates"])
    formats.write_whiten_pairs(formats.sfm_whiten_path(root, name), train["cids"], *train["whiten"])
    _write_image_table(folder / f"{name}-images.csv", rows)
    keys = ("cids", "cluster", "qidxs", "pidxs")
    formats.write_sfm_db(
        formats.sfm_db_path(root, name), {s: {k: d[k] for k in keys} for s, d in splits.items()}
    )
    return {
        split: {
            "images": len(d["cids"]),
            "models": len(set(d["cluster"])),
            "pairs": len(d["qidxs"]),
            "whitening_pairs": len(d["whiten"][0]),
        }
        for split, d in splits.items()
    }
