"""The whole run, photo folder to training set, stage by stage (each resumable):
images -> descriptors -> pairs -> SIFT features -> matches -> verification -> mapping -> dataset."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import atomic_write
from retrieval.data import formats
from retrieval.data.sfm import colmap
from retrieval.data.sfm.dataset import Model, write_dataset
from retrieval.data.sfm.errors import NoModelError, SfmInputError, require_pycolmap
from retrieval.data.sfm.images import (
    MANIFEST,
    PreparedImages,
    find_images,
    prepare_images,
    read_manifest,
    write_manifest,
)
from retrieval.data.sfm.models import Observations, observations, pair_statistics
from retrieval.data.sfm.options import SfmOptions
from retrieval.data.sfm.pairs import choose_pairs, read_pairs, write_pairs
from retrieval.data.sfm.stages import Stages

log = logging.getLogger(__name__)

# paths of the prepared images -> N x D global descriptors (rows in that order)
Describe = Callable[[Sequence[Path]], np.ndarray]


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1).encode()
    atomic_write(path, lambda handle: handle.write(text))


def _files_key(folder: Path, files: list[Path]) -> str:
    """What the photo folder holds: names, sizes and modification times."""
    return _digest([(p.relative_to(folder).as_posix(), *_size_time(p)) for p in files])


def _size_time(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


class _Run:
    """One call of :func:`build_sfm_dataset`: its paths, options and stages."""

    def __init__(self, root: Path, options: SfmOptions) -> None:
        self.root, self.options = root, options
        self.folder = formats.sfm_dir(root, options.name)
        self.work = self.folder / "colmap"
        self.database = self.work / "database.db"
        self.stages = Stages(self.work)

    def images(self, source: Path) -> PreparedImages:
        files = find_images(source, exclude=self.folder)
        key = {"max_side": self.options.max_side, "files": _files_key(source, files)}
        manifest = self.work / MANIFEST

        def work() -> dict:
            prepared = prepare_images(source, self.work, self.options.max_side, self.folder)
            write_manifest(prepared, manifest)
            return {"found": len(files), "usable": len(prepared), "skipped": prepared.skipped}

        self.stages.run("images", key, work, (manifest,))
        return read_manifest(manifest)

    def descriptors(
        self, prepared: PreparedImages, describe: Describe, describer: str
    ) -> np.ndarray:
        path = self.work / "descriptors.npy"
        key = {"describer": describer, "cids": _digest(prepared.cids)}

        def work() -> dict:
            values = np.asarray(describe(prepared.paths), dtype=np.float32)
            if values.ndim != 2 or values.shape[0] != len(prepared):
                raise ValueError(
                    f"describe() returned an array of shape {values.shape}; expected "
                    f"{len(prepared)} x D (one row per image)"
                )
            atomic_write(path, lambda handle: np.save(handle, values))
            return {"images": int(values.shape[0]), "dim": int(values.shape[1])}

        self.stages.run("descriptors", key, work, (path,))
        return np.load(path)

    def pairs(self, prepared: PreparedImages, descriptors: np.ndarray) -> np.ndarray:
        path, opts = self.work / "pairs.txt", self.options
        key = {"k": opts.pairs_k, "exhaustive_max": opts.exhaustive_max}

        def work() -> dict:
            pairs = choose_pairs(descriptors, opts.pairs_k, opts.exhaustive_max)
            write_pairs(path, pairs, prepared.names)
            exhaustive = len(prepared) <= opts.exhaustive_max
            return {"pairs": int(len(pairs)), "mode": "exhaustive" if exhaustive else "retrieval"}

        self.stages.run("pairs", key, work, (path,))
        return read_pairs(path, prepared.names)

    def colmap(self, prepared: PreparedImages, pairs: np.ndarray) -> int:
        """Features, matches and verification; returns the verified pairs."""
        opts, names, db = self.options, prepared.names, self.database
        identity = {"max_side": opts.max_side, "max_features": opts.max_features}
        marker = self.work / "database.json"
        if db.is_file() and (not marker.is_file() or json.loads(marker.read_text()) != identity):
            db.unlink()  # SIFT of other settings: start the database again
        _write_json(marker, identity)
        images = self.work / "images"
        self.stages.run(
            "features",
            {**identity, "cids": _digest(prepared.cids)},
            lambda: {"extracted": colmap.extract_features(db, images, names, opts)},
            (db,),
        )
        key = {"pairs": _digest(pairs.tolist())}
        self.stages.run(
            "matches", key, lambda: {"matched": colmap.match_pairs(db, pairs, names, opts)}
        )
        rule = {"min_inliers": opts.min_inliers}
        verified_with = self.work / "verification.json"
        if verified_with.is_file() and json.loads(verified_with.read_text()) != rule:
            colmap.clear_verification(db)  # another inlier threshold: verify every pair again
        _write_json(verified_with, rule)
        summary = self.stages.run(
            "verification",
            {**key, **rule},
            lambda: {"verified_pairs": colmap.verify_pairs(db, pairs, names, opts)},
        )
        return int(summary["verified_pairs"])

    def mapping(self, n_images: int) -> dict[int, Any]:
        sparse, opts = self.work / "sparse", self.options

        def work() -> dict:
            models = colmap.incremental_mapping(
                self.database, self.work / "images", sparse, n_images, opts
            )
            sizes = {str(k): m.num_reg_images() for k, m in models.items()}
            return {"models": sizes}

        names = ("min_model_size", "init_min_inliers", "init_min_tri_angle", "abs_pose_min_inliers")
        key = {name: getattr(opts, name) for name in (*names, "seed")}
        self.stages.run("mapping", key, work, (sparse,))
        return colmap.read_models(sparse)


def _one_model_per_image(
    reconstructions: dict[int, Any], cids: set[str], min_size: int
) -> tuple[list[Model], list[dict]]:
    """Kept models (largest first), each image in one model only; and every model's sizes."""
    found = [(k, observations(r), r.num_points3D()) for k, r in reconstructions.items()]
    found.sort(key=lambda item: (-len(item[1].names), item[0]))
    taken: set[str] = set()
    kept, table = [], []
    for model_id, obs, points in found:
        allowed = [n for n in obs.names if n[:-4] in cids and n[:-4] not in taken]
        row = {"model": model_id, "registered": len(obs.names), "points3d": points}
        table.append({**row, "kept": len(allowed) >= min_size})
        if len(allowed) < min_size:
            continue
        obs = _restrict(obs, allowed)
        taken |= {n[:-4] for n in allowed}
        kept.append(Model(model_id, [n[:-4] for n in obs.names], pair_statistics(obs), points))
    return kept, table


def _restrict(obs: Observations, names: list[str]) -> Observations:
    """The observations of ``names`` only (reindexed)."""
    new_index = {n: i for i, n in enumerate(names)}
    remap = np.array([new_index.get(n, -1) for n in obs.names], dtype=np.int64)
    image = remap[obs.image] if obs.image.size else obs.image
    keep = image >= 0
    return Observations(names, image[keep], obs.point[keep], obs.log_scale[keep])


def _no_model_error(
    n_images: int, pairs: int, verified: int, table: list, options: SfmOptions
) -> NoModelError:
    sizes = ", ".join(str(r["registered"]) for r in table) or "none"
    why = (
        "no pair of photos shares enough verified SIFT matches"
        if verified == 0
        else f"{verified} photo pairs matched, but no model reached {options.min_model_size} images"
    )
    return NoModelError(
        f"COLMAP built no 3D model of at least --min-model-size {options.min_model_size} images "
        f"from {n_images} photos ({pairs} pairs matched, {verified} verified; model sizes: "
        f"{sizes}): {why}. The photos must overlap: several photos of the same place from nearby "
        "viewpoints. Try: more photos per landmark; --pairs-k higher or --exhaustive-max above "
        f"{n_images} (match every pair); --max-side 1600 --max-features 8192 (more features); "
        "--min-model-size 2. No training set was written; the work folder is kept for a rerun."
    )


def build_sfm_dataset(
    images: str | Path,
    root: str | Path,
    describe: Describe,
    options: SfmOptions | None = None,
    describer: str = "",
) -> dict[str, Any]:
    """Photos in ``images`` -> a retrieval-SfM-120k training set ``root/train/<name>``; returns
    the report (also written beside the database). ``describe`` maps image paths to global
    descriptors (the retrieval that proposes pairs); ``describer`` names it, so a rerun with
    another network describes again. A rerun skips the stages that finished."""
    options = options or SfmOptions()
    require_pycolmap()  # before any work: the error names the pip command
    source, run = Path(images), _Run(Path(root), options)
    existed = run.folder.exists()
    try:
        prepared = run.images(source)
    except SfmInputError:
        if not existed:  # nothing of a failed start stays behind
            shutil.rmtree(run.folder, ignore_errors=True)
        raise
    descriptors = run.descriptors(prepared, describe, describer)
    pairs = run.pairs(prepared, descriptors)
    verified = run.colmap(prepared, pairs)
    reconstructions = run.mapping(len(prepared))
    models, table = _one_model_per_image(
        reconstructions, set(prepared.cids), options.min_model_size
    )
    if not models:
        raise _no_model_error(len(prepared), len(pairs), verified, table, options)
    sources = dict(zip(prepared.cids, prepared.sources, strict=True))
    key = {k: v for k, v in options.as_dict().items() if k not in ("num_threads", "gpu")}
    splits = run.stages.run(
        "dataset",
        key,
        lambda: write_dataset(run.root, models, prepared.folder, sources, options),
        (formats.sfm_db_path(run.root, options.name),),
    )
    report = {
        "images": {"found": len(prepared) + len(prepared.skipped), "usable": len(prepared)},
        "skipped": [{"image": s, "reason": r} for s, r in prepared.skipped],
        "registered": sum(len(m.cids) for m in models),
        "models": table,
        "pairs": {"matched": int(len(pairs)), "verified": verified},
        "splits": splits,
        "seconds": {s: v["seconds"] for s, v in run.stages.report.items()},
        "resumed": [s for s, v in run.stages.report.items() if v["resumed"]],
        "options": options.as_dict(),
    }
    _write_json(run.folder / f"{options.name}-report.json", report)
    return report
