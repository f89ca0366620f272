"""What an SfM run is asked to do: its parameters, their checks and the published positive rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# The positive rule of Radenovic et al. (ECCV 2016), by which retrieval-SfM-120k was mined: a
# database image is a positive of a query when it sees at least MIN_OVERLAP of the query's 3D
# points and the scale change between the two views is at most MAX_SCALE.
MIN_OVERLAP = 0.2
MAX_SCALE = 1.5


@dataclass
class SfmOptions:
    """Parameters of :func:`retrieval.data.sfm.build_sfm_dataset` (checked when built)."""

    name: str = "sfm-photos"  # the training set: ROOT/train/<name>/<name>.pkl
    max_side: int = 1024  # longest side of the images COLMAP sees and training reads (SfM-120k's)
    max_features: int = 4096  # SIFT features per image
    pairs_k: int = 20  # retrieval neighbours matched per image
    exhaustive_max: int = 60  # up to this many images, every pair is matched
    min_model_size: int = 3  # smallest 3D model kept (registered images)
    min_inliers: int = 30  # a verified pair: RANSAC inliers (COLMAP's 15 merges look-alike sites)
    init_min_inliers: int = 100  # the mapper's first pair: inliers (COLMAP's default)
    init_min_tri_angle: float = 16.0  # the mapper's first pair: triangulation angle, degrees
    abs_pose_min_inliers: int = 30  # registering an image: 2D-3D inliers (COLMAP's default)
    min_overlap: float = MIN_OVERLAP  # positives: shared points / the query's points
    max_scale: float = MAX_SCALE  # positives: largest scale change between query and positive
    min_shared: int = 15  # positives: at least this many shared 3D points (a floor, not published)
    val_fraction: float = 0.1  # models held out for validation
    num_threads: int = -1  # COLMAP threads (-1: all cores)
    gpu: bool = False  # COLMAP SIFT extraction and matching on the GPU (a CUDA build of COLMAP)
    seed: int = 0  # the fixed positive of each query and the train/val split of models

    def __post_init__(self) -> None:
        minimum = {
            "max_side": 64,
            "max_features": 64,
            "pairs_k": 1,
            "exhaustive_max": 0,
            "min_model_size": 2,
            "min_inliers": 1,
            "init_min_inliers": 1,
            "abs_pose_min_inliers": 1,
            "min_shared": 1,
        }
        for key, low in minimum.items():
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"sfm: {key} must be an integer >= {low}, got {value!r}")
        if not 0 < self.min_overlap <= 1:
            raise ValueError(f"sfm: min_overlap must be in (0, 1], got {self.min_overlap!r}")
        if not 0 < self.init_min_tri_angle < 90:
            raise ValueError(
                "sfm: init_min_tri_angle must be in (0, 90) degrees, got "
                f"{self.init_min_tri_angle!r}"
            )
        if self.max_scale < 1:
            raise ValueError(f"sfm: max_scale must be >= 1, got {self.max_scale!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"sfm: val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"sfm: name must be a plain folder name, got {self.name!r}")

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values (for the report)."""
        return asdict(self)
