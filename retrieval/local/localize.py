"""Training-free localisation and segmentation of a query object in a retrieved image.

The baseline uses the retrieval network only. For a query (its crop) and a database image:

1. similarity map: the cosine between the query's descriptor in the local-feature space (the
   network's own pooling of the query's feature map when it keeps the channels, as GeM does,
   else GeM p=3) and every L2-normalised position of the image's feature map
   (``similarity="global"``), or the best cosine over the query's positions (``"local"``);
2. segmentation: the map is upsampled (bilinear, 4x) and thresholded at a fraction of its range
   (``threshold=0.3``, the default: 30% of the way from its minimum to its maximum) or by
   Otsu's rule (``threshold="otsu"``);
3. the connected component (4-connected) holding the map's maximum, its holes filled
   (``fill_holes``), upsampled to the image's original size, is the mask, its bounding box the
   box. With ``verify=True`` the seeds are instead the image
   positions that are mutual nearest neighbours of a query position (local-feature matching
   between the two maps): the components holding a match are kept, the maximum's when none
   falls inside the mask.

:func:`pixel_evaluation` runs it on every annotated query-positive pair of a benchmark and
scores it with :mod:`retrieval.eval.pixel`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from retrieval.data import formats
from retrieval.data.masks import mask_box, polygons_to_mask
from retrieval.eval.benchmarks import ExtractionSettings
from retrieval.eval.pixel import (
    SKIPPED_QUERIES,
    Pair,
    box_iou,
    evaluate_pixel,
    mask_iou,
)
from retrieval.local.features import iter_feature_maps
from retrieval.models.functional import gem
from retrieval.models.net import RetrievalNet
from retrieval.types import Box, RetrievalBenchmark

log = logging.getLogger(__name__)

SIMILARITIES = ("global", "local")


@dataclass
class Localization:
    """A predicted object region in one image, at the image's original size."""

    mask: np.ndarray  # bool H x W
    box: Box | None  # (x1, y1, x2, y2) pixel edges; None when the mask is empty
    score: float  # the similarity map's maximum


@dataclass
class LocalizeOptions:
    """How :func:`localize` turns a similarity map into a region."""

    similarity: str = "global"
    threshold: str | float = 0.3
    verify: bool = False
    fill_holes: bool = True

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ValueError(
                f"localize similarity must be one of {SIMILARITIES}, got {self.similarity!r}"
            )
        if self.threshold != "otsu" and not (
            isinstance(self.threshold, int | float) and 0.0 <= float(self.threshold) < 1.0
        ):
            raise ValueError(
                f"localize threshold must be 'otsu' or a fraction in [0, 1), got {self.threshold!r}"
            )


# --------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------


def query_vector(net: RetrievalNet, query_map: torch.Tensor) -> torch.Tensor:
    """The query's unit descriptor in the local-feature space (C,) from its C x h x w map."""
    channels = query_map.shape[0]
    with torch.no_grad():
        if int(net.meta.get("pooled_dim", -1)) == channels:
            pooled = net.pooling(query_map[None])[0]
        else:  # the net's descriptor lives elsewhere (BoW, Neural Codes...): GeM of the map
            pooled = gem(query_map[None], p=3.0)[0]
    return F.normalize(pooled.float(), dim=0)


def similarity_map(query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Cosine of each position of a C x h x w map with a query vector (C,), or the best cosine
    over query positions when `query` is a C x n matrix of local features (h x w)."""
    positions = F.normalize(features.flatten(1), dim=0)  # C x hw
    if query.dim() == 1:
        sim = F.normalize(query, dim=0) @ positions
    else:
        sim = (F.normalize(query, dim=0).T @ positions).amax(dim=0)
    return sim.view(features.shape[1:])


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut of a histogram that maximises the between-class variance."""
    hist, edges = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(hist)
    above = below[-1] - below
    mass = np.cumsum(hist * centres)
    mean_below = mass / np.maximum(below, 1)
    mean_above = (mass[-1] - mass) / np.maximum(above, 1)
    between = (below * above * (mean_below - mean_above) ** 2)[:-1]
    # Every cut inside an empty gap between the modes scores the same: take the gap's middle.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def reconstruct(seeds: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Pixels of a boolean `support` 4-connected to the boolean `seeds` inside it
    (morphological reconstruction by dilation: grow the seeds one pixel a step until stable)."""
    current = seeds & support
    while True:
        grown = current.copy()
        grown[1:] |= current[:-1]
        grown[:-1] |= current[1:]
        grown[:, 1:] |= current[:, :-1]
        grown[:, :-1] |= current[:, 1:]
        grown &= support
        if np.array_equal(grown, current):
            return current
        current = grown


def component_mask(mask: np.ndarray, seeds: Iterable[tuple[int, int]]) -> np.ndarray:
    """Union of the 4-connected components of a boolean mask holding the (row, col) seeds."""
    mask = np.asarray(mask, dtype=bool)
    start = np.zeros_like(mask)
    for r, c in seeds:
        start[int(r), int(c)] = True
    return reconstruct(start, mask)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region that does not reach the border filled in."""
    background = ~np.asarray(mask, dtype=bool)
    border = np.zeros_like(background)
    border[[0, -1], :] = border[:, [0, -1]] = True
    return ~reconstruct(border, background)


def mutual_nearest_neighbours(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairs (i, j), k x 2, where row i of `a` and row j of `b` are each other's nearest
    neighbour by cosine (rows are local descriptors)."""
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    forward = sim.argmax(dim=1)  # best j for every i
    backward = sim.argmax(dim=0)  # best i for every j
    i = torch.arange(len(a))
    keep = backward[forward] == i
    return torch.stack([i[keep], forward[keep]], dim=1)


def segment(
    similarity: torch.Tensor,
    size: tuple[int, int],
    threshold: str | float = 0.3,
    seeds: Sequence[tuple[int, int]] = (),
    holes: bool = True,
    refine: int = 4,
) -> np.ndarray:
    """Mask (H, W) from an h x w similarity map: upsample, threshold, keep the seeded components
    (and fill their holes unless `holes` is False).

    Thresholding and components run on the map upsampled (bilinear) `refine` times, the mask is
    then upsampled to (H, W) (bilinear, >= 0.5): the map is coarse, so nothing finer is lost,
    and components cost a few grid sizes of pixel steps. `seeds` are feature-map positions
    (row, col); without any inside the thresholded map, the maximum's component is kept.
    """
    h, w = similarity.shape
    grid = (min(size[0], h * refine), min(size[1], w * refine))
    up = F.interpolate(similarity[None, None].float(), size=grid, mode="bilinear")[0, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    if hi - lo < 1e-9:  # a flat map says nothing: the whole image
        return np.ones(size, dtype=bool)
    cut = otsu_threshold(up) if threshold == "otsu" else lo + float(threshold) * (hi - lo)
    binary = up >= cut
    cells = [(int((r + 0.5) * grid[0] / h), int((c + 0.5) * grid[1] / w)) for r, c in seeds]
    cells = [p for p in cells if binary[p]] or [np.unravel_index(int(np.argmax(up)), grid)]
    mask = component_mask(binary, cells)
    if holes:
        mask = fill_holes(mask)
    full = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=size, mode="bilinear")
    return full[0, 0].numpy() >= 0.5


def localize(
    query_map: torch.Tensor,
    query_vec: torch.Tensor,
    db_map: torch.Tensor,
    size: tuple[int, int],
    options: LocalizeOptions | None = None,
) -> Localization:
    """Localise a query (its C x hq x wq map and unit vector) in a db image's C x h x w map,
    at the db image's original size (H, W)."""
    options = options or LocalizeOptions()
    query = query_vec if options.similarity == "global" else query_map.flatten(1)
    sim = similarity_map(query, db_map)
    seeds: list[tuple[int, int]] = []
    if options.verify:
        matches = mutual_nearest_neighbours(query_map.flatten(1).T, db_map.flatten(1).T)
        width = db_map.shape[-1]
        seeds = [divmod(int(j), width) for j in matches[:, 1]]
    mask = segment(sim, size, options.threshold, seeds, holes=options.fill_holes)
    return Localization(mask, mask_box(mask), float(sim.max()))


# --------------------------------------------------------------------------------------------
# benchmarks
# --------------------------------------------------------------------------------------------


def _original_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header."""
    with Image.open(path) as img:
        return img.size[1], img.size[0]


def localize_pairs(
    net: RetrievalNet,
    benchmark: RetrievalBenchmark,
    pairs: Iterable[Pair],
    settings: ExtractionSettings,
    options: LocalizeOptions | None = None,
) -> dict[Pair, Localization]:
    """Localise each query q in db image i for every (q, i) pair, extracting each map once."""
    by_image: dict[int, list[int]] = {}
    for q, i in pairs:
        by_image.setdefault(int(i), []).append(int(q))
    wanted = sorted({q for qs in by_image.values() for q in qs})
    common = dict(
        max_side=settings.image_size,
        batch_size=settings.batch_size,
        device=settings.device,
        progress=settings.progress,
        num_workers=settings.num_workers,
    )
    query_maps: dict[int, torch.Tensor] = {}
    boxes = [benchmark.query_boxes[q] for q in wanted]
    paths = [benchmark.queries[q] for q in wanted]
    has_boxes = any(b is not None for b in boxes)
    for k, fmap in iter_feature_maps(
        net, paths, boxes=boxes if has_boxes else None, desc="localise queries", **common
    ):
        query_maps[wanted[k]] = fmap
    query_vecs = {q: query_vector(net, fmap) for q, fmap in query_maps.items()}
    images = sorted(by_image)
    out: dict[Pair, Localization] = {}
    for k, fmap in iter_feature_maps(
        net, [benchmark.images[i] for i in images], desc="localise in db", **common
    ):
        i = images[k]
        size = _original_size(benchmark.images[i])
        for q in by_image[i]:
            out[(q, i)] = localize(query_maps[q], query_vecs[q], fmap, size, options)
    return out


def pixel_groundtruth(root: str | Path, name: str) -> dict[Pair, Path]:
    """The pixel labels of a revisited benchmark, written first from masks for synthetic ones."""
    base = name.removesuffix("+r1m")
    if base.startswith("synthetic-rox"):
        from retrieval.data.synthetic import ensure_pixel_groundtruth

        ensure_pixel_groundtruth(root, base)
    return formats.load_pixel_groundtruth(root, base)


def pair_ious(
    predictions: dict[Pair, Localization], groundtruth: dict[Pair, Path]
) -> tuple[dict[Pair, float], dict[Pair, float]]:
    """Box and mask IoU of every annotated pair (a pair without prediction scores 0)."""
    box_ious: dict[Pair, float] = {}
    mask_ious: dict[Pair, float] = {}
    last: tuple[Path | None, np.ndarray | None] = (None, None)
    # Sorted by label file, so pairs sharing one (synthetic labels) rasterise it once.
    for pair, label in sorted(groundtruth.items(), key=lambda item: str(item[1])):
        pred = predictions.get(pair)
        if pred is None:
            box_ious[pair] = mask_ious[pair] = 0.0
            continue
        if last[0] != label:
            polygons, size = formats.read_labelme(label)
            shape = (size[1], size[0]) if size else pred.mask.shape
            last = (label, polygons_to_mask(polygons, shape))
        gt = last[1]
        if pred.mask.shape != gt.shape:
            raise ValueError(
                f"pair {pair}: prediction of size {pred.mask.shape} but labels {label} are "
                f"{gt.shape}; the labels must be at the image's original size"
            )
        box_ious[pair] = box_iou(pred.box, mask_box(gt))
        mask_ious[pair] = mask_iou(pred.mask, gt)
    return box_ious, mask_ious


def pixel_evaluation(
    net: RetrievalNet,
    benchmark: RetrievalBenchmark,
    ranks: np.ndarray,
    root: str | Path,
    settings: ExtractionSettings,
    options: LocalizeOptions | None = None,
    extra_pairs: Iterable[Pair] = (),
) -> tuple[dict[str, float], dict[Pair, Localization]]:
    """Pixel-retrieval figures of the baseline on a benchmark with pixel labels, and the
    predictions (annotated pairs plus `extra_pairs`, e.g. those a grid shows)."""
    if benchmark.protocol != "revisited":
        raise ValueError(f"pixel retrieval needs a revisited benchmark, not {benchmark.name!r}")
    groundtruth = pixel_groundtruth(root, benchmark.name)
    predictions = localize_pairs(
        net, benchmark, sorted(set(groundtruth) | set(extra_pairs)), settings, options
    )
    box_ious, mask_ious = pair_ious(predictions, groundtruth)
    base = benchmark.name.removesuffix("+r1m")
    figures = evaluate_pixel(
        ranks,
        benchmark.gnd,
        box_ious,
        mask_ious,
        skipped=SKIPPED_QUERIES.get(base, ()),
        n_db=len(benchmark.images),
    )
    return figures, predictions
