"""tools/pose_floor.py: the best 2D similarity and the best 3D pose are exact on points they can explain; the
keypoint row poses the mean face by BlazeFace's keypoints on real photos."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
from scipy.spatial.transform import Rotation

from tfface.paths import REPO_ROOT
from tfface.training.photo_evaluation import box_nme
from conftest import shared_or_skip

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


def test_best_pose_fitted_on_a_few_points_shows_the_others_under_the_same_camera():
    rng = np.random.default_rng(4)
    head = rng.normal(0, 40, (68, 3)) * [1.0, 1.2, 0.6]
    turn = Rotation.from_euler("yxz", [50, 10, -15], degrees=True).as_matrix()
    image = 3.0 * (head * [1.0, -1.0, -1.0]) @ turn[:2].T + [150.0, 90.0]
    few = [36, 45, 30, 51, 0, 16]
    np.testing.assert_allclose(floor.best_pose(head[few], image[few], head), image, atol=1e-4)


def test_keypoint_points_follow_blazeface_order_on_the_mean_face():
    from tfface.morphable.loaders import load_default_model

    right_eye, left_eye, nose, mouth, right_ear, left_ear = floor.keypoint_points(load_default_model())
    assert right_eye[0] < 0 < left_eye[0] and right_ear[0] < right_eye[0] and left_ear[0] > left_eye[0]
    assert nose[2] > max(right_eye[2], mouth[2]) and max(right_ear[2], left_ear[2]) < right_eye[2] - 30.0
    assert mouth[1] < nose[1] < right_eye[1]  # +y up


def test_mean_face_posed_by_keypoints_on_real_dev_photos(tmp_path):
    """The first four dev photos (yaw 1, 68, 50 and 17 degrees): BlazeFace finds each, and the mean
    face under its keypoints' camera lands within 15% box NME of the annotation (measured 4-13%)."""
    from tfface.morphable.loaders import load_default_model

    dev = shared_or_skip("data", "aflw2000-3d-dev")
    with np.load(dev / "landmarks.npz") as data:
        annotations = {key: data[key][:4] for key in data.files}
    (tmp_path / "images").mkdir()
    np.savez(tmp_path / "landmarks.npz", **annotations)
    for name in annotations["names"]:
        shutil.copy(dev / "images" / f"{name}.jpg", tmp_path / "images")
    posed, missed = floor.posed_by_keypoints(load_default_model(), tmp_path)
    nme = box_nme(posed, annotations["landmarks68"])
    assert not missed.any() and np.all(nme < 0.15) and nme.mean() < 0.10
