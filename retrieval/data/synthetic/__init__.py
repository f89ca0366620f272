"""Procedural landmark world written in the real dataset formats, so nothing has to be downloaded.

Each landmark is a small building made of textured planes (a facade, a street corner, a box or a
tower) whose textures are composed from a motif bank and palette shared by the whole world, so
different landmarks look alike locally (hard negatives) while each keeps a distinctive
arrangement. Photographs are rendered by ray-casting the planes through pinhole cameras (PIL
perspective warps for the textures, a per-pixel inverse-depth buffer for visibility) over a
sky/ground background with distant buildings, clouds, occluders and photometric changes.

3D points are sampled on the landmark's surfaces; a camera sees a point when it projects inside
the image, faces the camera and no nearer surface (occluders included) cuts the segment between
them. Two images share a point like SfM images share an inlier, which defines:

* training pairs (Radenovic et al.): a positive shares at least 20% of the query's points and the
  scale change (ratio of focal / mean depth over the shared points) is at most 1.5;
* the test labels of a query q and a database image i of the same landmark, from
  ``overlap`` = shared points / points seen by q, ``angle`` = angle between the two camera centres
  seen from the centroid of the shared points (degrees) and ``scale`` (>= 1, as above):

  - easy: overlap >= 0.5 and angle <= 30 and scale <= 1.5;
  - junk: overlap < 0.1 (the same building, but too little of the query's part in view);
  - hard: every other image of the landmark (partial views, strong viewpoint or scale change).

  Images of other landmarks are negatives. Every query has at least one easy and one hard
  positive.

Layout under the world root (a data root like the real one)::

    world.json                                   parameters, version, hash, statistics
    train/synthetic-sfm/synthetic-sfm.pkl        {'train', 'val'} splits as retrieval-SfM-120k
    train/synthetic-sfm/synthetic-sfm-whiten.pkl matching pairs for learned whitening
    train/synthetic-sfm/synthetic-sfm-positives.npz   per training image: (candidate, shared points)
    train/synthetic-sfm/synthetic-sfm-geometry.json   points seen, shared points, angle, scale
    train/synthetic-sfm/ims/<cid2filename(cid)>  JPEG images (no extension, like the real cids)
    train/synthetic-sfm/masks/<cid2filename(cid)>.png  landmark pixel masks
    train/synthetic-labels/train.csv (+ train/a/b/c/<id>.jpg)   GLDv2-style class labels
    test/synthetic-rox/gnd_synthetic-rox.pkl, jpg/<name>.jpg, masks/<name>.png, geometry.json
    test/synthetic-ukbench/full/ukbench%05d.jpg  groups of 4 views of one test landmark

Modules, from the bottom up: ``config`` (parameters and hash), ``geometry`` (planes, cameras,
visibility), ``pairs`` (pair geometry and label rules), ``palette``, ``motifs`` and ``textures``
(the look), ``landmarks``, ``views`` (cameras, occluders, photometric look), ``render``,
``shots`` (one landmark's photographs, in worker processes), ``writer`` (the dataset files) and
``cache`` (where worlds live, generated once).
"""

from retrieval.data.synthetic.cache import default_root, ensure_world, read_world_info
from retrieval.data.synthetic.config import (
    LABELS_NAME,
    SFM_NAME,
    TEST_NAME,
    UKBENCH_NAME,
    VERSION,
    SyntheticConfig,
    as_config,
)
from retrieval.data.synthetic.geometry import Camera, Plane, look_at, visible_points
from retrieval.data.synthetic.landmarks import Landmark, Surface, make_landmark
from retrieval.data.synthetic.motifs import MotifBank, Style, motif_bank
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
    pair_geometry,
    positive_mask,
)
from retrieval.data.synthetic.render import encode_jpeg, encode_mask, render_view
from retrieval.data.synthetic.shots import build_landmark
from retrieval.data.synthetic.textures import (
    arcade_texture,
    background_building_texture,
    facade_texture,
    occluder_texture,
    roof_texture,
)
from retrieval.data.synthetic.views import CamSpec, View, camera_from_spec, sample_view
from retrieval.data.synthetic.writer import ensure_pixel_groundtruth, generate_world

__all__ = [
    "EASY",
    "EASY_MAX_ANGLE",
    "EASY_MAX_SCALE",
    "EASY_MIN_OVERLAP",
    "HARD",
    "JUNK",
    "JUNK_MAX_OVERLAP",
    "LABELS_NAME",
    "SFM_NAME",
    "TEST_NAME",
    "UKBENCH_NAME",
    "VERSION",
    "CamSpec",
    "Camera",
    "Landmark",
    "MotifBank",
    "PairGeometry",
    "Plane",
    "Style",
    "Surface",
    "SyntheticConfig",
    "View",
    "arcade_texture",
    "as_config",
    "background_building_texture",
    "build_landmark",
    "camera_from_spec",
    "classify_pairs",
    "default_root",
    "encode_jpeg",
    "encode_mask",
    "ensure_pixel_groundtruth",
    "ensure_world",
    "facade_texture",
    "generate_world",
    "look_at",
    "make_landmark",
    "motif_bank",
    "occluder_texture",
    "pair_geometry",
    "positive_mask",
    "read_world_info",
    "render_view",
    "roof_texture",
    "sample_view",
    "visible_points",
]
