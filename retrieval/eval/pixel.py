"""Pixel retrieval metrics (PROxford/PRParis, An et al. ICCV'23).

Pixel retrieval asks, for a query object and a database image, for the pixels of that object in
the image; the ground truth of every query-positive pair is a set of labelme polygons. Figures:

* mIoU: the IoU of the predicted box (or mask) with the ground-truth box (or mask) of every
  positive of a query, averaged over the query's positives, then over the queries; Medium uses
  the easy and hard positives, Hard the hard ones (revisitop's split), whatever their rank.
* pixel mAP: revisitop's mAP where a positive counts as positive at threshold t only when its
  IoU exceeds t, averaged over t = 0.50, 0.55, ..., 0.95.

Quirks of the official evaluation code (``evaluation_code/`` of the benchmark's repository) kept
here, so figures compare with published ones:

1. the IoU must be strictly greater than t (``iou > t``);
2. a positive that fails the threshold is dropped from the positives but stays in the ranking,
   so it counts as a negative where it is ranked, and the AP's denominator counts only the
   positives that pass (a query that localises one positive well, ranked first, gets AP 1);
3. a query none of whose positives passes is left out of the mean at that threshold, as in
   revisitop; where no query keeps a positive the official script divides by zero, here that
   threshold scores 0;
4. the queries the official script skips (ROxford 56 and 63, RParis 57 and 59:
   :data:`SKIPPED_QUERIES`) keep AP 0 and still count in the denominator of the mean;
5. when fed the IoUs its own ``mious.py`` writes (``[box, mask]`` per pair) the official mAP
   script thresholds the first entry, the *box* IoU; both are reported here (``pmAP-box``,
   ``pmAP-mask``);
6. ``mious.py`` skips easy positives for which a method returns no points (a Medium quirk that
   favours methods that abstain); here a missing or empty prediction has IoU 0 everywhere.

Boxes are ``(x1, y1, x2, y2)`` in pixel edges and masks boolean ``H x W`` arrays; their geometry
(mask boxes, polygons) lives in :mod:`retrieval.data.masks`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from retrieval.eval.metrics import compute_map, revisited_protocols

log = logging.getLogger(__name__)

Pair = tuple[int, int]  # (query index, database index)

THRESHOLDS: tuple[float, ...] = tuple(round(0.50 + 0.05 * i, 2) for i in range(10))
SKIPPED_QUERIES: dict[str, tuple[int, ...]] = {"roxford5k": (56, 63), "rparis6k": (57, 59)}

# --------------------------------------------------------------------------------------------
# IoU
# --------------------------------------------------------------------------------------------


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """IoU of two (x1, y1, x2, y2) boxes; 0 when either is missing or empty."""
    if a is None or b is None:
        return 0.0
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    union -= inter
    return inter / union if union > 0 else 0.0


def mask_iou(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """IoU of two boolean masks of one image; 0 when either is missing or both are empty."""
    if a is None or b is None:
        return 0.0
    if a.shape != b.shape:
        raise ValueError(f"mask_iou: masks of shapes {a.shape} and {b.shape}; resize first")
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


# --------------------------------------------------------------------------------------------
# protocol figures
# --------------------------------------------------------------------------------------------


def _check_ious(ious: Mapping[Pair, float]) -> None:
    bad = [pair for pair, v in ious.items() if not 0.0 <= float(v) <= 1.0]
    if bad:
        raise ValueError(f"IoU of pair {bad[0]} is {ious[bad[0]]}, outside [0, 1]")


def mean_iou(ious: Mapping[Pair, float], positives: Sequence[np.ndarray]) -> float:
    """Per-query mean IoU over its positives, then mean over queries, in percent.

    Positives without an entry in `ious` (no ground truth annotated) are left out; queries with
    no scored positive are left out of the mean (NaN when none is left).
    """
    _check_ious(ious)
    per_query = []
    for q, ok in enumerate(positives):
        values = [float(ious[(q, int(i))]) for i in ok if (q, int(i)) in ious]
        if values:
            per_query.append(np.mean(values))
    return 100.0 * float(np.mean(per_query)) if per_query else float("nan")


def pixel_map(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, np.ndarray]],
    ious: Mapping[Pair, float],
    thresholds: Sequence[float] = THRESHOLDS,
    skipped: Sequence[int] = (),
    n_db: int | None = None,
) -> float:
    """Pixel-level mAP in percent: mAP with IoU-thresholded positives, averaged over thresholds.

    `gnd[q]` holds 'ok' and 'junk' (one protocol, e.g. revisitop Medium); `ious[(q, i)]` the IoU
    of positive i of query q (a missing pair counts as IoU 0). The official quirks (module
    docstring) are kept: strict ``iou > t``, failed positives become negatives, the AP counts
    only the passing positives, and `skipped` queries count as AP 0.
    """
    _check_ious(ious)
    if not thresholds:
        raise ValueError("pixel_map needs at least one IoU threshold")
    skip = set(int(q) for q in skipped)
    maps = []
    for t in thresholds:
        passing = [
            {
                "ok": np.array(
                    [i for i in entry["ok"] if q not in skip and ious.get((q, int(i)), 0.0) > t],
                    dtype=np.int64,
                ),
                "junk": entry.get("junk", np.empty(0, dtype=np.int64)),
            }
            for q, entry in enumerate(gnd)
        ]
        if not any(entry["ok"].size for entry in passing):
            maps.append(0.0)  # the official script divides by zero here
            continue
        _, aps, _, _ = compute_map(ranks, passing, (), n_db=n_db)
        aps[list(skip)] = 0.0  # counted in the denominator, as the official script does
        maps.append(float(np.nanmean(aps)))
    return 100.0 * float(np.mean(maps))


def evaluate_pixel(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, object]],
    box_ious: Mapping[Pair, float],
    mask_ious: Mapping[Pair, float],
    skipped: Sequence[int] = (),
    n_db: int | None = None,
) -> dict[str, float]:
    """Medium/Hard mIoU of boxes and masks and pixel mAP (box and mask IoU), in percent.

    `gnd` is revisitop's easy/hard/junk list; keys are like ``'M/mIoU-box'``, ``'H/pmAP-mask'``.
    """
    protocols = revisited_protocols(gnd)
    out: dict[str, float] = {}
    for tag, name in (("M", "medium"), ("H", "hard")):
        positives = [entry["ok"] for entry in protocols[name]]
        out[f"{tag}/mIoU-box"] = mean_iou(box_ious, positives)
        out[f"{tag}/mIoU-mask"] = mean_iou(mask_ious, positives)
        for kind, ious in (("box", box_ious), ("mask", mask_ious)):
            out[f"{tag}/pmAP-{kind}"] = pixel_map(
                ranks, protocols[name], ious, skipped=skipped, n_db=n_db
            )
    return out
