"""Shared 3D points and scale change per image pair, from point tracks; the positive rule."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.sfm.models import Observations, directed_positives, pair_statistics


def tracks(rows: list[tuple[int, int, float]], n: int) -> Observations:
    image, point, scale = (np.array(c) for c in zip(*rows, strict=True))
    return Observations([f"{i}.jpg" for i in range(n)], image, point, np.log(scale))


def test_shared_points_and_scale_are_counted_per_pair():
    # image 0 sees points 1-4 at scale 1; image 1 sees 1-3 at scale 2; image 2 sees 4 at 1.
    rows = [(0, p, 1.0) for p in (1, 2, 3, 4)] + [(1, p, 2.0) for p in (1, 2, 3)] + [(2, 4, 1.0)]
    stats = pair_statistics(tracks(rows, 3))
    found = {
        (int(a), int(b)): (int(s), float(c))
        for a, b, s, c in zip(stats.first, stats.second, stats.shared, stats.scale, strict=True)
    }
    assert found == {(0, 1): (3, 2.0), (0, 2): (1, 1.0)}
    np.testing.assert_array_equal(stats.points, [4, 3, 1])


def test_scale_is_the_geometric_mean_ratio_whichever_image_is_larger():
    rows = [(1, 7, 1.0), (0, 7, 4.0), (1, 8, 1.0), (0, 8, 1.0)]
    stats = pair_statistics(tracks(rows, 2))
    assert stats.shared.tolist() == [2]
    assert stats.scale[0] == pytest.approx(2.0)  # sqrt(4 * 1)


def test_no_shared_point_gives_no_pair():
    stats = pair_statistics(tracks([(0, 1, 1.0), (1, 2, 1.0)], 2))
    assert stats.first.size == 0 and stats.points.tolist() == [1, 1]


def test_positive_rule_uses_the_query_points_and_the_scale_limit():
    # 0 and 1 share 3 points; 0 sees 10, 1 sees 3: 1 is a positive of 0 only below 0.3 overlap.
    rows = [(0, p, 1.0) for p in range(10)] + [(1, p, 1.0) for p in range(3)]
    rows += [(2, p, 3.0) for p in range(10)]  # the same points, 3x the scale
    stats = pair_statistics(tracks(rows, 3))
    query, positive, shared = directed_positives(stats, 0.2, 1.5, 1)
    assert set(zip(query.tolist(), positive.tolist(), strict=True)) == {(0, 1), (1, 0)}
    assert shared.tolist() == [3, 3]
    query, positive, _ = directed_positives(stats, 0.5, 1.5, 1)
    assert set(zip(query.tolist(), positive.tolist(), strict=True)) == {(1, 0)}
    query, _, _ = directed_positives(stats, 0.2, 1.5, 4)  # fewer shared points than asked
    assert query.size == 0
    query, positive, _ = directed_positives(stats, 0.2, 3.0, 1)  # the 3x pair passes now
    assert (0, 2) in set(zip(query.tolist(), positive.tolist(), strict=True))
