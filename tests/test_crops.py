"""Face crops from detections and landmarks, and everything mapped back to the original picture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfface.data.framing import landmark_crop, template_landmarks68
from tfface.detection import crops, warp
from tfface.detection.blazeface import Detection, FaceDetector
from tfface.detection.evaluation import match
from tfface.errors import InputError
from tfface.io.images import fit_to_square, read_image
from tfface.io.records import head_pose_degrees
from conftest import shared_or_skip


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``R = diag(1, -1, -1) Rz(roll) Ry(yaw) Rx(pitch)`` (degrees), the records' pose convention."""
    y, p, r = np.radians([yaw, pitch, roll])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return np.diag([1.0, -1.0, -1.0]) @ rz @ ry @ rx


def _camera(rng, yaw=0.0, pitch=0.0, roll=0.0):
    """A random camera (focal lengths, skew, principal point, translation) with the given pose."""
    K = np.array([[rng.uniform(300, 600), rng.uniform(-5, 5), rng.uniform(50, 80)],
                  [0.0, rng.uniform(300, 600), rng.uniform(50, 80)], [0.0, 0.0, 1.0]])
    return K, _rotation(yaw, pitch, roll), np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(500, 900)])


#: A camera with square pixels looking at the model's origin from 700 mm.
SQUARE_K, CENTRED_T = np.array([[500.0, 0.0, 64.0], [0.0, 500.0, 64.0], [0.0, 0.0, 1.0]]), np.array([0.0, 0.0, 700.0])


@pytest.fixture(scope="module")
def template(default_model) -> np.ndarray:
    template = crops.detection_template(default_model)
    np.testing.assert_allclose(crops.default_detection_template(), template)
    return template


def test_framing_matrix_maps_centre_side_and_angle():
    framing = crops.Framing(np.array([100.0, 50.0]), 40.0, math.radians(30))
    matrix = framing.matrix(128)
    np.testing.assert_allclose(warp.apply(matrix, [100.0, 50.0]), [64.0, 64.0])
    assert math.isclose(abs(np.linalg.det(matrix[:2, :2])), (128 / 40) ** 2)
    # a face turned 30 degrees clockwise as seen is upright after the picture turns 30 degrees back
    tilted = np.array([100.0, 50.0]) + 10 * np.array([math.cos(math.radians(30)), math.sin(math.radians(30))])
    turned = warp.apply(matrix, tilted) - 64.0
    assert abs(turned[1]) < 1e-9 and turned[0] > 0
    with pytest.raises(InputError, match="side"):
        crops.Framing(np.zeros(2), 0.0).matrix(64)


@pytest.mark.parametrize("angle", [0.0, 0.4, -2.5])
def test_camera_to_original_projects_like_the_crop_mapped_back(angle):
    rng = np.random.default_rng(3)
    K, R, t = _camera(rng, 20.0, -10.0, 5.0)
    points = rng.normal(0, 50, (30, 3))
    matrix = crops.Framing(np.array([300.0, 200.0]), 150.0, angle).matrix(128)
    K_o, R_o, t_o = crops.camera_to_original(K, R, t, matrix)
    in_crop = crops.project_to_original(points, K, R, t)
    np.testing.assert_allclose(crops.project_to_original(points, K_o, R_o, t_o),
                               crops.to_original(in_crop, matrix), atol=1e-8)
    assert K_o[1, 0] == K_o[2, 0] == K_o[2, 1] == 0 and K_o[2, 2] == 1 and K_o[0, 0] > 0 and K_o[1, 1] > 0
    np.testing.assert_allclose(R_o @ R_o.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R_o) > 0
    # round trip: the picture as a crop of the crop gives the crop camera back
    for back, original in zip(crops.camera_to_original(K_o, R_o, t_o, np.linalg.inv(matrix)), (K, R, t)):
        np.testing.assert_allclose(back, original, atol=1e-9)
    # with square pixels the turn of the crop shows in the roll of the head pose, nothing else
    R_square = crops.camera_to_original(SQUARE_K, R, t, matrix)[1]
    pose, pose_o = head_pose_degrees(R), head_pose_degrees(R_square)
    assert math.isclose(pose_o["yaw"], pose["yaw"], abs_tol=1e-6)
    assert math.isclose(pose_o["pitch"], pose["pitch"], abs_tol=1e-6)
    # the face is upright in a crop turned counter-clockwise: in the picture it is turned clockwise
    assert math.isclose((pose_o["roll"] - pose["roll"] + math.degrees(angle) + 180) % 360, 180, abs_tol=1e-6)


def test_intrinsics_without_turn_are_the_square_fits():
    """Pad-and-resize (today's whole-input crop) is the special case of a scale and a shift."""
    image = np.zeros((90, 160, 3), np.uint8)
    _, fit = fit_to_square(image, 128)
    K = np.array([[400.0, 0.0, 64.0], [0.0, 400.0, 64.0], [0.0, 0.0, 1.0]])
    matrix = np.linalg.inv(fit.matrix())
    np.testing.assert_allclose(crops.intrinsics_to_original(K, matrix), fit.matrix() @ K)
    np.testing.assert_allclose(crops.camera_to_original(K, np.eye(3), np.zeros(3), matrix)[0], fit.matrix() @ K)


def test_camera_to_original_refuses_reflections():
    with pytest.raises(InputError, match="orientation"):
        crops.camera_to_original(np.eye(3), np.eye(3), np.zeros(3), np.diag([-1.0, 1.0, 1.0]))


def _placed(template: np.ndarray, scale: float, angle: float, shift) -> np.ndarray:
    """Unit template points placed in a picture: scaled, turned counter-clockwise as seen by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    return (template - 0.5) @ (scale * np.array([[c, s], [-s, c]])).T + shift


def test_detection_framing_turns_by_the_keypoints(template):
    angle = math.radians(25)
    points = _placed(template, 200.0, angle, [300.0, 250.0])
    keypoints = np.vstack([points, points[:2] + [[-60, 0], [60, 0]]])  # ears are not used
    box = np.array([230.0, 180.0, 370.0, 320.0])
    framing = crops.detection_framing(Detection(box, keypoints, 0.9, "short_range"), template)
    assert framing.method == "keypoints"
    assert math.isclose(framing.angle, -angle, abs_tol=1e-9)  # turned back
    assert math.isclose(framing.side, crops.BOX_CROP_SCALE * 140.0)
    eyes = np.diff(warp.apply(framing.matrix(128), points[:2]), axis=0)[0]
    template_eyes = template[1] - template[0]
    assert abs(eyes[0] * template_eyes[1] - eyes[1] * template_eyes[0]) < 1e-9 and eyes @ template_eyes > 0  # upright as the mean face
    down = np.array([math.sin(angle), math.cos(angle)])
    np.testing.assert_allclose(framing.centre, [300.0, 250.0] + crops.BOX_CROP_SHIFT * 140.0 * down)


def test_profile_keypoints_leave_the_crop_upright(template):
    points = _placed(template, 200.0, 0.3, [300.0, 250.0])
    points[1] = points[0] + [5.0, 0.0]  # the far eye behind the near one
    detection = Detection(np.array([230.0, 180.0, 370.0, 320.0]), np.vstack([points, points[:2]]), 0.7, "full_range")
    framing = crops.detection_framing(detection, template)
    assert framing.method == "box" and framing.angle == 0.0
    np.testing.assert_allclose(framing.centre, [300.0, 250.0 + crops.BOX_CROP_SHIFT * 140.0])


def test_landmark_framing_is_canonical_after_undoing_the_roll(default_model):
    R = _rotation(0.0, 0.0, 35.0)
    points68 = crops.project_to_original(default_model.mean[default_model.landmarks68], SQUARE_K, R, CENTRED_T)
    framing = crops.landmark_framing(points68, head_pose_degrees(R)["roll"])
    assert framing.method == "landmarks"
    unit = warp.apply(framing.matrix(1), points68)
    np.testing.assert_allclose(landmark_crop(unit), [0.0, 0.0, 1.0], atol=1e-9)
    # upright: the frontal mean face lands on the (orthographic) template, but for perspective
    np.testing.assert_allclose(unit, template_landmarks68(default_model), atol=0.03)
    assert abs(unit[45, 1] - unit[36, 1]) < 1e-9  # outer eye corners level
    unturned = crops.landmark_framing(points68)
    np.testing.assert_allclose(unturned.side, landmark_crop(points68)[2])


@pytest.mark.parametrize("yaw, roll", [(0.0, 35.0), (0.0, -20.0), (40.0, 15.0), (-65.0, -25.0)])
def test_upright_framing_keeps_the_crop_and_sets_the_face_upright(default_model, yaw, roll):
    """The mean face turned by ``roll`` in a crop turned by another angle: the upright framing has
    the crop's centre and side, and in it the face's eye line is level whatever its yaw."""
    R = _rotation(yaw, 0.0, roll)
    points68 = crops.project_to_original(default_model.mean[default_model.landmarks68], SQUARE_K, R, CENTRED_T)
    first = crops.Framing(np.array([70.0, 60.0]), 150.0, math.radians(10.0), "keypoints")
    framing = crops.upright_framing(first, R)
    assert framing.method == "upright" and framing.side == first.side
    np.testing.assert_array_equal(framing.centre, first.centre)
    assert framing.angle == pytest.approx(-math.radians(roll), abs=1e-9)
    assert framing.angle == pytest.approx(crops.landmark_framing(points68, head_pose_degrees(R)["roll"]).angle)
    # the same camera seen from each crop (the picture-to-crop map taken as a crop-to-picture one
    # gives the crop's camera): no roll left in the upright crop, the first crop's turn in the other
    for crop_framing, left in ((framing, 0.0), (first, roll + 10.0)):
        _, R_crop, _ = crops.camera_to_original(SQUARE_K, R, CENTRED_T, np.linalg.inv(crop_framing.matrix(128)))
        pose = head_pose_degrees(R_crop)
        assert pose["roll"] == pytest.approx(left, abs=1e-6) and pose["yaw"] == pytest.approx(yaw, abs=1e-6)
    np.testing.assert_allclose(warp.apply(framing.matrix(128), framing.centre[None])[0], [64.0, 64.0], atol=1e-9)


def test_anchor_round_trip():
    framing = crops.Framing(np.array([100.0, 80.0]), 50.0, 0.4, "landmarks")
    reference = crops.Framing(np.array([110.0, 70.0]), 60.0, 0.1, "keypoints")
    difference = crops.anchor(framing, reference)
    moved = crops.anchored(framing, difference)
    np.testing.assert_allclose(moved.centre, reference.centre)
    assert math.isclose(moved.side, reference.side) and moved.angle == framing.angle
    # the difference lives in the framing's own frame: it moves, scales and turns with it
    turned = crops.anchored(crops.Framing(np.array([0.0, 0.0]), 100.0, 0.4 + math.pi / 2), difference)
    assert math.isclose(turned.side, 120.0)
    assert math.isclose(np.linalg.norm(turned.centre), 100 * np.linalg.norm(difference[1]))


def test_crop_warps_the_framed_square():
    picture = np.zeros((200, 300, 3), np.uint8)
    picture[90:110, 140:160] = 255
    image, matrix = crops.crop(picture, crops.Framing(np.array([150.0, 100.0]), 40.0), 64)
    assert image.shape == (64, 64, 3)
    np.testing.assert_allclose(matrix, crops.Framing(np.array([150.0, 100.0]), 40.0).matrix(64))
    assert image[24:40, 24:40].min() == 255 and image[:12].max() == 0


def test_outputs_to_original(default_model):
    rng = np.random.default_rng(5)
    K, R, t = _camera(rng, yaw=30.0)
    vertices = default_model.mean[None]
    landmarks = crops.project_to_original(vertices[0][default_model.landmarks68], K, R, t)
    outputs = {"K": K, "R": R, "t": t, "vertices": vertices[0], "landmarks68": landmarks, "landmarks5": landmarks[:5]}
    matrix = crops.Framing(np.array([400.0, 300.0]), 250.0, 0.2).matrix(128)
    mapped = crops.outputs_to_original(outputs, matrix)
    np.testing.assert_allclose(mapped["landmarks68"], crops.to_original(landmarks, matrix))
    np.testing.assert_allclose(mapped["mesh2d"][default_model.landmarks68], mapped["landmarks68"], atol=1e-8)


def test_detected_crops_frame_dev_faces_like_their_ground_truth(template):
    """Against the canonical crops of the annotation (angle aside): centre and side."""
    folder = shared_or_skip("data", "aflw2000-3d-dev")
    with np.load(folder / "landmarks.npz") as data:
        names, landmarks = data["names"][:40], data["landmarks68"][:40].astype(np.float64)
    detector = FaceDetector()
    centre_errors, scales = [], []
    for name, points in zip(names, landmarks):
        detection = match(detector(read_image(folder / "images" / f"{name}.jpg")), points)
        if detection is None:
            continue
        unit = warp.apply(crops.detection_framing(detection, template).matrix(1), points)
        x0, y0, side = landmark_crop(unit)  # the canonical crop, seen inside ours: ideally (0, 0, 1)
        centre_errors.append(math.hypot(x0 + side / 2 - 0.5, y0 + side / 2 - 0.5))
        scales.append(side)
    assert len(scales) >= 38
    assert np.median(centre_errors) < 0.05 and np.percentile(centre_errors, 90) < 0.1
    assert 0.93 < np.median(scales) < 1.07 and np.percentile(np.abs(np.log(scales)), 90) < 0.2
