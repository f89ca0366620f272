"""Generating a world: landmarks built in worker processes, written in the real dataset formats."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retrieval.data import formats
from retrieval.data.masks import mask_to_polygons
from retrieval.data.synthetic.config import (
    LABELS_NAME,
    SFM_NAME,
    TEST_NAME,
    UKBENCH_NAME,
    VERSION,
    SyntheticConfig,
)
from retrieval.data.synthetic.pairs import (
    EASY,
    EASY_MAX_ANGLE,
    EASY_MAX_SCALE,
    EASY_MIN_OVERLAP,
    HARD,
    JUNK,
    JUNK_MAX_OVERLAP,
    PairGeometry,
    classify_pairs,
    positive_mask,
)
from retrieval.data.synthetic.shots import build_landmark

log = logging.getLogger(__name__)


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _link(src: Path, dst: Path) -> None:
    """Hardlink ``src`` to ``dst`` (copy where links are not possible)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _run_jobs(jobs: list[tuple], workers: int) -> list[dict[str, Any]]:
    """``build_landmark`` over the jobs, in order, in ``workers`` processes."""
    if workers <= 0:
        workers = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    workers = min(workers, len(jobs))
    if workers <= 1:
        return [build_landmark(job) for job in jobs]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(build_landmark, jobs, chunksize=1))


def _sfm_split(
    results: list[dict[str, Any]],
    first_cluster: int,
    cid_rng: np.random.Generator,
    config: SyntheticConfig,
) -> dict[str, Any]:
    """Cids, clusters, query-positive pairs, candidates and matching pairs of one SfM split."""
    cids, cluster, qidxs, pidxs, candidates, match_q, match_p = [], [], [], [], [], [], []
    seen, rows = [], []
    for k, res in enumerate(results):
        offset = len(cids)
        geo: PairGeometry = res["geometry"]
        n = len(res["images"])
        cids += [cid_rng.bytes(16).hex() for _ in range(n)]
        cluster += [first_cluster + k] * n
        pos = positive_mask(geo, config.positive_min_overlap, config.positive_max_scale)
        pair_rng = np.random.default_rng(res["pair_seed"])
        for q in range(n):
            pool = np.flatnonzero(pos[q])
            if pool.size:
                qidxs.append(offset + q)
                pidxs.append(offset + int(pair_rng.choice(pool)))
            others = [j for j in np.flatnonzero(geo.shared[q] > 0) if j != q]
            candidates.append([(offset + int(j), int(geo.shared[q, j])) for j in others])
            rows += [
                (
                    offset + q,
                    offset + int(j),
                    int(geo.shared[q, j]),
                    float(geo.angle[q, j]),
                    float(geo.scale[q, j]),
                )
                for j in others
            ]
        seen += [int(c) for c in geo.n_visible]
        for q, p in zip(*np.nonzero(np.triu(pos | pos.T, 1)), strict=True):
            match_q.append(offset + int(q))
            match_p.append(offset + int(p))
    return {
        "cids": cids,
        "cluster": cluster,
        "qidxs": qidxs,
        "pidxs": pidxs,
        "bbxs": [None] * len(qidxs),
        "candidates": candidates,
        "match": (match_q, match_p),
        "geometry": {
            "points_seen": seen,
            "pairs": _columns(("query", "db", "shared", "angle", "scale"), rows),
        },
    }


def _columns(names: Sequence[str], rows: list[tuple]) -> dict[str, list]:
    return {name: [row[k] for row in rows] for k, name in enumerate(names)}


def _write_sfm(root: Path, train: list[dict], val: list[dict], config: SyntheticConfig) -> dict:
    """Training and validation splits, sidecars, whitening pairs and class labels."""
    folder = formats.sfm_dir(root, SFM_NAME)
    cid_rng = np.random.default_rng([config.seed, 0xC1D])
    splits = {
        "train": _sfm_split(train, 0, cid_rng, config),
        "val": _sfm_split(val, len(train), cid_rng, config),
    }
    for name, results in (("train", train), ("val", val)):
        images = [im for res in results for im in res["images"]]
        masks = [m for res in results for m in res["masks"]]
        for cid, jpeg, mask in zip(splits[name]["cids"], images, masks, strict=True):
            _write_bytes(formats.cid2filename(cid, folder / "ims"), jpeg)
            _write_bytes(formats.cid2filename(cid, folder / "masks").with_suffix(".png"), mask)
    keys = ("cids", "cluster", "qidxs", "pidxs", "bbxs")
    formats.write_sfm_db(
        formats.sfm_db_path(root, SFM_NAME),
        {name: {k: s[k] for k in keys} for name, s in splits.items()},
    )
    train_split = splits["train"]
    formats.write_positives_sidecar(folder / f"{SFM_NAME}-positives.npz", train_split["candidates"])
    formats.write_whiten_pairs(
        formats.sfm_whiten_path(root, SFM_NAME), train_split["cids"], *train_split["match"]
    )
    _write_labels(root, folder, train_split["cids"], train_split["cluster"])
    geometry = {
        "rule": {
            "positive_min_overlap": config.positive_min_overlap,
            "positive_max_scale": config.positive_max_scale,
            "overlap": "shared / points_seen[query]",
        },
        **{name: s["geometry"] for name, s in splits.items()},
    }
    (folder / f"{SFM_NAME}-geometry.json").write_text(json.dumps(geometry))
    return {
        name: {
            "images": len(s["cids"]),
            "landmarks": len(set(s["cluster"])),
            "pairs": len(s["qidxs"]),
            "matching_pairs": len(s["match"][0]),
        }
        for name, s in splits.items()
    }


def _write_labels(root: Path, sfm_folder: Path, cids: list[str], cluster: list[int]) -> None:
    """GLDv2-style class labels of the training images (hardlinks to the SfM images)."""
    folder = root / "train" / LABELS_NAME
    ids = [cid[:16] for cid in cids]
    for cid, image_id in zip(cids, ids, strict=True):
        _link(
            formats.cid2filename(cid, sfm_folder / "ims"),
            formats.gldv2_image_path(folder / "train", image_id),
        )
    formats.write_gldv2_train_csv(folder / "train.csv", ids, cluster)


def _write_test(root: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The revisitop-style test split, its geometry and the UKBench-style groups."""
    folder = formats.test_dir(root, TEST_NAME)
    imlist, qimlist, gnd, rows = [], [], [], []
    ukbench: list[str] = []
    for k, res in enumerate(results):
        offset = len(imlist)
        names = [f"rox_{k:03d}_{i:03d}" for i in range(len(res["images"]))]
        for name, jpeg, mask in zip(names, res["images"], res["masks"], strict=True):
            _write_bytes(folder / "jpg" / f"{name}.jpg", jpeg)
            _write_bytes(folder / "masks" / f"{name}.png", mask)
        imlist += names
        geo: PairGeometry | None = res.get("q_geometry")
        for q, (jpeg, mask, box) in enumerate(
            zip(res["q_images"], res["q_masks"], res["q_boxes"], strict=True)
        ):
            qname = f"rox_{k:03d}_q{q}"
            _write_bytes(folder / "jpg" / f"{qname}.jpg", jpeg)
            _write_bytes(folder / "masks" / f"{qname}.png", mask)
            labels = classify_pairs(geo.overlap[q], geo.angle[q], geo.scale[q])
            entry = {"bbx": box}
            for code, key in ((EASY, "easy"), (HARD, "hard"), (JUNK, "junk")):
                entry[key] = [offset + int(i) for i in np.flatnonzero(labels == code)]
            gnd.append(entry)
            qimlist.append(qname)
            for i in range(len(names)):
                rows.append(
                    (
                        len(qimlist) - 1,
                        offset + i,
                        int(geo.shared[q, i]),
                        int(geo.n_visible[q]),
                        float(geo.angle[q, i]),
                        float(geo.scale[q, i]),
                    )
                )
            if q == 0:
                best = np.argsort(-geo.shared[0], kind="stable")[:3]
                ukbench += [f"{qname}.jpg"] + [f"{names[int(i)]}.jpg" for i in best]
    formats.write_revisitop_gnd(formats.gnd_path(root, TEST_NAME), imlist, qimlist, gnd)
    _write_geometry(folder / "geometry.json", rows)
    uk_folder = formats.test_dir(root, UKBENCH_NAME) / "full"
    for i, name in enumerate(ukbench):
        _link(folder / "jpg" / name, uk_folder / f"ukbench{i:05d}.jpg")
    counts = {key: [len(g[key]) for g in gnd] for key in ("easy", "hard", "junk")}
    return {
        "images": len(imlist),
        "queries": len(qimlist),
        "landmarks": len(results),
        "ukbench_images": len(ukbench),
        **{f"mean_{k}": float(np.mean(v)) if v else 0.0 for k, v in counts.items()},
    }


def _write_geometry(path: Path, rows: list[tuple]) -> None:
    """Per query-database pair of one landmark: what the easy/hard/junk rule is computed from."""
    columns = ("query", "db", "shared", "query_points", "angle", "scale")
    data = {
        "rule": {
            "easy_min_overlap": EASY_MIN_OVERLAP,
            "easy_max_angle": EASY_MAX_ANGLE,
            "easy_max_scale": EASY_MAX_SCALE,
            "junk_max_overlap": JUNK_MAX_OVERLAP,
            "overlap": "shared / query_points",
        },
        "pairs": _columns(columns, rows),
    }
    path.write_text(json.dumps(data))


def generate_world(root: str | Path, config: SyntheticConfig | None = None) -> dict[str, Any]:
    """Generate the world into ``root`` (a new or empty folder) and return its statistics.

    Files are written in place; :func:`ensure_world` adds caching and an atomic swap.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    params = config.params()
    jobs = [
        (config.seed, split, i, params)
        for split, n in (
            ("train", config.n_train_landmarks),
            ("val", config.n_val_landmarks),
            ("test", config.n_test_landmarks),
        )
        for i in range(n)
    ]
    results = _run_jobs(jobs, config.workers)
    n_train, n_val = config.n_train_landmarks, config.n_val_landmarks
    sfm = _write_sfm(root, results[:n_train], results[n_train : n_train + n_val], config)
    test = _write_test(root, results[n_train + n_val :])
    stats = {
        "sfm": sfm,
        "test": test,
        "kinds": {
            k: sum(r["kind"] == k for r in results) for k in ("facade", "corner", "box", "tower")
        },
    }
    info = {"version": VERSION, "hash": config.key(), "params": params, "stats": stats}
    (root / "world.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    stats["seconds"] = time.perf_counter() - start
    log.info("synthetic world %s generated in %.1f s", root, stats["seconds"])
    return stats


def ensure_pixel_groundtruth(root: str | Path, name: str = TEST_NAME) -> Path:
    """Write the test split's pixel labels in PROxford's format from its masks (once).

    Each positive db image's landmark mask becomes a labelme file ``pixel/labels/<image>.json``
    (outlines of its components, holes filled), and ``pixel/<name>_pair2labelpath.npy`` maps
    every query-positive pair to it: a db image shows one landmark, whole, as the query crop
    does. Returns the map's path; the map is written last, so its presence means complete.
    """
    path = formats.pair_labels_path(root, name)
    if path.is_file():
        return path
    bench = formats.load_revisitop(root, name, check_images=False)
    folder = formats.test_dir(root, name)
    labels: dict[tuple[int, int], str] = {}
    written: set[int] = set()
    for q, entry in enumerate(bench.gnd):
        for i in np.concatenate([entry["easy"], entry["hard"]]).astype(int):
            stem = bench.images[i].stem
            rel = f"labels/{stem}.json"
            if i not in written:
                mask = np.asarray(Image.open(folder / "masks" / f"{stem}.png")) > 127
                formats.write_labelme(
                    path.parent / rel,
                    mask_to_polygons(mask),
                    (mask.shape[1], mask.shape[0]),
                    f"../../jpg/{bench.images[i].name}",
                    label=f"landmark {stem.rsplit('_', 1)[0]}",
                )
                written.add(i)
            labels[(q, int(i))] = rel
    formats.write_pair_labels(path, labels)
    log.info("wrote pixel labels of %d pairs to %s", len(labels), path.parent)
    return path
