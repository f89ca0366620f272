"""Training data from your own photos: COLMAP structure from motion (pycolmap) turns a photo
folder into 3D models, and the models into a retrieval-SfM-120k training set.

The network that proposes image pairs is passed in as a ``describe`` callable (this layer never
imports a network); ``python -m retrieval.data sfm`` wires it (``retrieval.pipelines.sfm``).
"""

from retrieval.data.sfm.errors import (
    PIP_EXTRA,
    MissingPycolmapError,
    NoModelError,
    SfmError,
    SfmInputError,
    require_pycolmap,
)
from retrieval.data.sfm.options import MAX_SCALE, MIN_OVERLAP, SfmOptions
from retrieval.data.sfm.run import Describe, build_sfm_dataset

__all__ = [
    "MAX_SCALE",
    "MIN_OVERLAP",
    "PIP_EXTRA",
    "Describe",
    "MissingPycolmapError",
    "NoModelError",
    "SfmError",
    "SfmInputError",
    "SfmOptions",
    "build_sfm_dataset",
    "require_pycolmap",
]
