"""Scene geometry, pair labels, rendering and query selection on small hand-made cases."""

from __future__ import annotations

import numpy as np

from retrieval.data import synthetic as S
from retrieval.data.synthetic.shots import choose_queries, db_shots


def _wall(z: float, half: float, alpha: np.ndarray | None = None) -> S.Plane:
    """Square wall in the plane z, facing +z, spanning [-half, half] in x and [0, 2 half] in y."""
    return S.Plane(
        np.array([-half, 0.0, z]), np.array([2 * half, 0, 0.0]), np.array([0, 2 * half, 0.0]), alpha
    )


def test_visibility_two_plane_scene():
    back, front = _wall(0.0, 20.0), _wall(3.0, 1.0)  # front: x in [-1, 1], y in [0, 2] at z=3
    cam = S.look_at(np.array([0.0, 1.0, 10.0]), np.array([0.0, 1.0, 0.0]), 100.0, 200, 200)
    points = np.array(
        [
            [0.0, 1.0, 0.0],  # on the back wall, behind the front plane
            [3.0, 1.0, 0.0],  # on the back wall, clear
            [0.0, 1.0, 3.0],  # on the front plane itself
            [-15.0, 1.0, 0.0],  # on the back wall but outside the image (x = -50 px)
        ]
    )
    normals = np.tile([0.0, 0.0, 1.0], (4, 1))
    vis = S.visible_points(points, normals, cam, [back, front])
    assert vis.tolist() == [False, True, True, False]
    # Facing away from the camera: not seen even when in view.
    assert not S.visible_points(points[1:2], -normals[1:2], cam, [back, front])[0]
    # A hole in the front plane's mask lets the point through.
    holed = np.ones((4, 4), bool)
    holed[1:3, 1:3] = False
    vis = S.visible_points(points[:1], normals[:1], cam, [back, _wall(3.0, 1.0, holed)])
    assert vis[0]
    # A camera behind the back wall sees nothing of its front.
    behind = S.look_at(np.array([0.0, 1.0, -10.0]), np.array([0.0, 1.0, 0.0]), 100.0, 200, 200)
    assert not S.visible_points(points, normals, behind, [back, front]).any()


def test_projection_and_look_at_conventions():
    cam = S.look_at(np.array([0.0, 0.0, 10.0]), np.zeros(3), 100.0, 200, 100)
    uv, z = cam.project(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    assert np.allclose(uv[0], [100, 50]) and np.isclose(z[0], 10)
    # Looking along -z with +y up: world +x is image right, +y is image up.
    assert np.allclose(uv[1], [110, 40])


def test_rendered_mask_agrees_with_point_visibility():
    rng = np.random.default_rng(11)
    lm = S.make_landmark(rng, S.motif_bank(0), 800)
    checked = 0
    while checked < 4:
        view = S.sample_view(rng, lm, 160, "db")
        if view is None:
            continue
        _, mask = S.render_view(lm, view)
        vis = S.visible_points(
            lm.points, lm.normals, view.camera, lm.planes + [s.plane for s in view.occluders]
        )
        if vis.sum() < 20:
            continue
        uv = view.camera.project(lm.points[vis])[0].astype(int)
        assert mask[uv[:, 1], uv[:, 0]].mean() > 0.9
        checked += 1


def test_pair_geometry_scale_and_angle():
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near = S.look_at(np.array([0.0, 0.0, 10.0]), np.zeros(3), 100.0, 64, 64)
    far = S.look_at(np.array([0.0, 0.0, 20.0]), np.zeros(3), 100.0, 64, 64)
    side = S.look_at(np.array([10.0, 0.0, 0.0]), np.zeros(3), 100.0, 64, 64)
    vis = np.ones((3, 2), bool)
    depth = np.array([[10.0, 10.0], [20.0, 20.0], [10.0, 9.0]])
    cams = [near, far, side]
    geo = S.pair_geometry(vis, depth, cams, vis, depth, cams, points)
    assert np.isclose(geo.scale[0, 1], 2.0) and np.isclose(geo.scale[1, 0], 2.0)
    # Both seen from the shared points' centroid (0.5, 0, 0).
    assert np.isclose(geo.angle[0, 1], np.degrees(np.arctan(0.05) - np.arctan(0.025)))
    # From the centroid (0.5, 0, 0): near is at (-0.5, 0, 10), side at (9.5, 0, 0).
    expected = np.degrees(np.arccos(-0.5 * 9.5 / (np.hypot(0.5, 10) * 9.5)))
    assert np.isclose(geo.angle[0, 2], expected)
    assert geo.shared[0, 2] == 2 and np.allclose(geo.overlap, 1.0)


def test_queries_complete_a_sparse_database():
    """With a one-view database, query selection adds views until each query qualifies."""
    rng = np.random.default_rng(5)
    lm = S.make_landmark(rng, S.motif_bank(0), 400)
    db = db_shots(rng, lm, 1, 96)
    queries = choose_queries(rng, lm, db, 2, 96)
    assert len(queries.views) == 2 and len(db.views) > 1
    qvis, qdepth, qcams = queries.arrays()
    dvis, ddepth, dcams = db.arrays()
    geo = S.pair_geometry(qvis, qdepth, qcams, dvis, ddepth, dcams, lm.points)
    labels = S.classify_pairs(geo.overlap, geo.angle, geo.scale)
    assert ((labels == S.EASY).any(1) & (labels == S.HARD).any(1)).all()


def test_classify_pairs_thresholds():
    labels = S.classify_pairs(
        np.array([0.6, 0.6, 0.6, 0.3, 0.05, 0.5]),
        np.array([10, 40, 10, 10, 5, 30.0]),
        np.array([1.2, 1.2, 1.8, 1.0, 1.0, 1.5]),
    )
    assert labels.tolist() == [S.EASY, S.HARD, S.HARD, S.HARD, S.JUNK, S.EASY]
