"""COLMAP through pycolmap: SIFT extraction, matching of given pairs, geometric verification and
incremental mapping, each resumable from the database and with a progress bar."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from retrieval.data.sfm.errors import require_pycolmap
from retrieval.data.sfm.options import SfmOptions

EXTRACT_CHUNK = 16  # images per extraction call (the bar moves, an interrupt loses at most this)
MATCH_CHUNK = 256  # pairs per matching / verification call


@contextlib.contextmanager
def quiet_colmap(verbose: bool = False) -> Iterator[Any]:
    """pycolmap with COLMAP's INFO lines silenced (warnings and errors still shown)."""
    pycolmap = require_pycolmap()
    before = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = before if verbose else max(before, 1)
    try:
        yield pycolmap
    finally:
        pycolmap.logging.minloglevel = before


def _device(pycolmap: Any, options: SfmOptions) -> Any:
    return pycolmap.Device.cuda if options.gpu else pycolmap.Device.cpu


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def _database(pycolmap: Any, path: Path) -> Iterator[Any]:
    db = pycolmap.Database.open(str(path))
    try:
        yield db
    finally:
        db.close()


def _image_ids(pycolmap: Any, database: Path) -> dict[str, int]:
    with _database(pycolmap, database) as db:
        return {image.name: image.image_id for image in db.read_all_images()}


def extract_features(database: Path, image_dir: Path, names: list[str], options: SfmOptions) -> int:
    """SIFT keypoints of every image not yet in ``database``; returns the images extracted."""
    with quiet_colmap() as pycolmap:
        done = set()
        if database.is_file():
            ids = _image_ids(pycolmap, database)
            with _database(pycolmap, database) as db:
                done = {name for name, i in ids.items() if db.exists_keypoints(i)}
        todo = [name for name in names if name not in done]
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = options.num_threads
        extraction.max_image_size = options.max_side
        extraction.use_gpu = options.gpu
        extraction.sift.max_num_features = options.max_features
        with tqdm(
            total=len(names), initial=len(names) - len(todo), desc="sfm: SIFT", unit="img"
        ) as bar:
            for chunk in _chunks(todo, EXTRACT_CHUNK):
                pycolmap.extract_features(
                    database,
                    image_dir,
                    image_names=list(chunk),
                    camera_mode=pycolmap.CameraMode.PER_IMAGE,  # photos from many cameras
                    extraction_options=extraction,
                    device=_device(pycolmap, options),
                )
                bar.update(len(chunk))
    return len(todo)


def _pair_file(work: Path, lines: Sequence[str]) -> Path:
    fd, name = tempfile.mkstemp(dir=work, prefix=".pairs.", suffix=".txt")
    with open(fd, "w") as handle:
        handle.write("".join(lines))
    return Path(name)


def _pending(pycolmap: Any, database: Path, pairs: np.ndarray, names: list[str], test: str) -> list:
    ids = _image_ids(pycolmap, database)
    with _database(pycolmap, database) as db:
        exists = getattr(db, test)
        return [
            f"{names[a]} {names[b]}\n" for a, b in pairs if not exists(ids[names[a]], ids[names[b]])
        ]


def match_pairs(database: Path, pairs: np.ndarray, names: list[str], options: SfmOptions) -> int:
    """SIFT matches of the given pairs not yet matched in ``database``; returns pairs matched."""
    with quiet_colmap() as pycolmap:
        todo = _pending(pycolmap, database, pairs, names, "exists_matches")
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = options.num_threads
        matching.use_gpu = options.gpu
        matching.skip_geometric_verification = True  # its own stage, timed apart
        bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="sfm: match", unit="pair")
        with bar:
            for chunk in _chunks(todo, MATCH_CHUNK):
                path = _pair_file(database.parent, chunk)
                try:
                    pairing = pycolmap.ImportedPairingOptions()
                    pairing.match_list_path = path
                    pycolmap.match_image_pairs(
                        database,
                        matching_options=matching,
                        pairing_options=pairing,
                        device=_device(pycolmap, options),
                    )
                finally:
                    path.unlink(missing_ok=True)
                bar.update(len(chunk))
    return len(todo)


def verify_pairs(database: Path, pairs: np.ndarray, names: list[str], options: SfmOptions) -> int:
    """Two-view geometry (RANSAC) of the matched pairs not yet verified; returns verified pairs."""
    with quiet_colmap() as pycolmap:
        todo = _pending(pycolmap, database, pairs, names, "exists_two_view_geometry")
        geometry = pycolmap.TwoViewGeometryOptions()
        geometry.ransac.random_seed = options.seed
        geometry.min_num_inliers = options.min_inliers
        bar = tqdm(
            total=len(pairs), initial=len(pairs) - len(todo), desc="sfm: verify", unit="pair"
        )
        with bar:
            for chunk in _chunks(todo, MATCH_CHUNK):
                path = _pair_file(database.parent, chunk)
                try:
                    pycolmap.verify_matches(database, path, options=geometry)
                finally:
                    path.unlink(missing_ok=True)
                bar.update(len(chunk))
        with _database(pycolmap, database) as db:
            # every tried pair has a row; the verified ones have inliers
            _, inliers = db.read_two_view_geometry_num_inliers()
            return int(np.count_nonzero(np.asarray(inliers, dtype=np.int64) > 0))


def clear_verification(database: Path) -> None:
    """Drop the two-view geometries of ``database`` (before verifying with other settings)."""
    with quiet_colmap() as pycolmap, _database(pycolmap, database) as db:
        db.clear_two_view_geometries()


def incremental_mapping(
    database: Path, image_dir: Path, out: Path, n_images: int, options: SfmOptions
) -> dict[int, Any]:
    """COLMAP's incremental mapper; the models land in ``out/<k>`` only once all are done."""
    with quiet_colmap() as pycolmap:
        pipeline = pycolmap.IncrementalPipelineOptions()
        pipeline.min_model_size = options.min_model_size
        pipeline.num_threads = options.num_threads
        pipeline.random_seed = options.seed
        pipeline.mapper.random_seed = options.seed
        pipeline.triangulation.random_seed = options.seed
        pipeline.mapper.init_min_num_inliers = options.init_min_inliers
        pipeline.mapper.init_min_tri_angle = options.init_min_tri_angle
        pipeline.mapper.abs_pose_min_num_inliers = options.abs_pose_min_inliers
        partial = out.with_name(f".{out.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with tqdm(total=n_images, desc="sfm: map", unit="img") as bar:
            models = pycolmap.incremental_mapping(
                database, image_dir, partial, pipeline, next_image_callback=lambda: bar.update(1)
            )
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        return dict(models)


def read_models(folder: Path) -> dict[int, Any]:
    """The models written by :func:`incremental_mapping` (a resumed run reads them back)."""
    with quiet_colmap() as pycolmap:
        subdirs = sorted(
            (p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        return {int(p.name): pycolmap.Reconstruction(p) for p in subdirs}
