"""Small COLMAP runs: photos with no overlap give no model and say why; nothing is written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.data import formats
from retrieval.data.sfm import NoModelError, SfmOptions, build_sfm_dataset

from .conftest import mean_colour

pytest.importorskip("pycolmap", reason="COLMAP's bindings (pip install -e '.[sfm]') are absent")

SMALL = {"max_side": 160, "max_features": 256, "num_threads": 2}


def test_photos_without_overlap_build_no_model_and_say_what_to_try(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(3):  # unrelated noise: SIFT finds features, no pair verifies
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
            tmp_path / f"noise{k}.png"
        )
    options = SfmOptions(name="none", **SMALL)
    with pytest.raises(NoModelError) as err:
        build_sfm_dataset(tmp_path, tmp_path / "out", mean_colour, options)
    message = str(err.value)
    assert "no 3D model" in message and "from 3 photos" in message
    assert "no pair of photos shares enough verified SIFT matches" in message
    assert "--pairs-k" in message and "--max-features" in message
    assert not formats.sfm_db_path(tmp_path / "out", "none").exists()
    # A rerun resumes (the work folder is kept) and says the same.
    with pytest.raises(NoModelError, match="no 3D model"):
        build_sfm_dataset(tmp_path, tmp_path / "out", mean_colour, options)


def test_extraction_and_matching_resume_where_they_stopped(tmp_path):
    """An interrupted stage keeps what COLMAP stored: a rerun does only the rest."""
    from retrieval.data.sfm import colmap
    from retrieval.data.sfm.pairs import exhaustive_pairs

    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (140, 180, 3), dtype=np.uint8)
    names = []
    for k in range(4):  # shifted crops of one noise picture: they match
        names.append(f"view{k}.png")
        Image.fromarray(base[5 * k : 5 * k + 120, 4 * k : 4 * k + 160]).save(tmp_path / names[-1])
    db, options = tmp_path / "database.db", SfmOptions(**SMALL)
    assert colmap.extract_features(db, tmp_path, names[:2], options) == 2
    assert colmap.extract_features(db, tmp_path, names, options) == 2  # only the other two
    pairs = exhaustive_pairs(4)
    assert colmap.match_pairs(db, pairs[:2], names, options) == 2
    assert colmap.match_pairs(db, pairs, names, options) == len(pairs) - 2
    verified = colmap.verify_pairs(db, pairs, names, options)
    assert verified >= 3  # overlapping crops verify
    assert colmap.match_pairs(db, pairs, names, options) == 0  # nothing matched twice
    assert colmap.verify_pairs(db, pairs, names, options) == verified
