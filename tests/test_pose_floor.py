"""tools/pose_floor.py: the best 2D similarity and the best 3D pose are exact on points they can explain."""

from __future__ import annotations

import importlib.util

import numpy as np
from scipy.spatial.transform import Rotation

from tfface.paths import REPO_ROOT

spec = importlib.util.spec_from_file_location("pose_floor", REPO_ROOT / "tools" / "pose_floor.py")
floor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(floor)


def test_best_similarity_recovers_a_similarity():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 100, (68, 2))
    turn = Rotation.from_euler("z", 25, degrees=True).as_matrix()[:2, :2]
    target = 1.7 * points @ turn.T + [12.0, -30.0]
    np.testing.assert_allclose(floor.best_similarity(points, target), target, atol=1e-8)


def test_best_pose_recovers_a_turned_head():
    rng = np.random.default_rng(2)
    head = rng.normal(0, 40, (68, 3)) * [1.0, 1.2, 0.6]  # model space, +y up
    for yaw, pitch, roll in ((60, -10, 5), (-75, 15, -20), (5, 0, 0)):
        turn = Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True).as_matrix()
        image_axes = (head - head.mean(0)) * [1.0, -1.0, -1.0]
        target = 2.5 * image_axes @ turn[:2].T + [200.0, 220.0]
        np.testing.assert_allclose(floor.best_pose(head, target), target, atol=1e-4)


def test_best_pose_is_a_least_squares_fit_not_an_interpolation():
    rng = np.random.default_rng(3)
    head = rng.normal(0, 40, (68, 3))
    target = rng.uniform(0, 200, (68, 2))  # no pose explains random points
    fitted = floor.best_pose(head, target)
    assert np.linalg.norm(fitted - target) > 0.5 * np.linalg.norm(target - target.mean(0))
