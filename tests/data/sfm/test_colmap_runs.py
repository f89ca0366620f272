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
