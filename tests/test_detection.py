"""BlazeFace detection: anchors, decoding, weighted NMS, and boxes against the dev photos' landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from tfface.detection import blazeface as bf
from tfface.detection import evaluation, warp
from tfface.errors import InputError
from tfface.io.images import read_image
from tfface.morphable.model import landmarks5_from_68
from tfface.paths import REPO_ROOT
from conftest import shared_or_skip

#: Dev photos the tests read (the first ones by name, all yaws among them).
DEV_PHOTOS = 60


@pytest.fixture(scope="module")
def dev_photos():
    """``(photos, landmarks68 (N, 68, 2), yaw (N,))`` of the first :data:`DEV_PHOTOS` dev photos."""
    folder = shared_or_skip("data", "aflw2000-3d-dev")
    with np.load(folder / "landmarks.npz") as data:
        names = data["names"][:DEV_PHOTOS]
        landmarks = data["landmarks68"][:DEV_PHOTOS].astype(np.float64)
        yaw = data["yaw_pitch_roll_degrees"][:DEV_PHOTOS, 0]
    return [read_image(folder / "images" / f"{name}.jpg") for name in names], landmarks, yaw


@pytest.mark.parametrize("spec, count", [(bf.SHORT_RANGE, 896), (bf.FULL_RANGE, 2304)])
def test_anchors_match_the_models(spec, count):
    anchors = bf.ssd_anchors(spec.input_size, spec.strides, spec.anchors_per_layer)
    assert anchors.shape == (count, 2)
    model = bf.BlazeFace(spec)  # checks its output count against the anchors
    np.testing.assert_array_equal(model.anchors, anchors)
    first_cell = spec.strides[0] / spec.input_size
    np.testing.assert_allclose(anchors[0], [first_cell / 2, first_cell / 2])
    assert anchors.min() > 0 and anchors.max() < 1


def test_short_range_anchor_layout():
    anchors = bf.ssd_anchors(128, (8, 16, 16, 16), 2)
    # 16 x 16 cells with 2 anchors each, then 8 x 8 cells with 6 (three stride-16 layers merged)
    np.testing.assert_allclose(anchors[:2], [[1 / 32, 1 / 32]] * 2)
    np.testing.assert_allclose(anchors[2], [3 / 32, 1 / 32])
    np.testing.assert_allclose(anchors[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(anchors[518], [3 / 16, 1 / 16])
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])


def test_decode_known_regressors():
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]])
    raw = np.zeros((2, 16))
    raw[0, :4] = [12.8, -6.4, 32.0, 16.0]  # in 128-pixel input units
    raw[0, 4:] = np.arange(12) * 1.28
    raw[1, 4:6] = [-12.8, 0.0]
    boxes, keypoints, scores = bf.decode(raw, np.array([[0.0], [1000.0]]), anchors, 128)
    # centre (0.35, 0.45), size (0.25, 0.125)
    np.testing.assert_allclose(boxes[0], [0.225, 0.3875, 0.475, 0.5125])
    np.testing.assert_allclose(keypoints[0], anchors[0] + (np.arange(12) / 100).reshape(6, 2))
    np.testing.assert_allclose(boxes[1], [0.75, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(keypoints[1, 0], [0.65, 0.75])
    np.testing.assert_allclose(scores, [0.5, 1.0 / (1.0 + np.exp(-bf.SCORE_CLIPPING))])


def test_decode_rejects_wrong_shapes():
    with pytest.raises(InputError, match="regressors"):
        bf.decode(np.zeros((3, 12)), np.zeros(3), np.zeros((3, 2)), 128)


def test_box_iou():
    box = np.array([0.0, 0.0, 2.0, 2.0])
    others = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(bf.box_iou(box, others), [1.0, 2.0 / 6.0, 0.0, 0.0])


def test_weighted_nms_blends_overlapping_candidates_by_score():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [1.0, 1.0, 11.0, 11.0]])
    keypoints = boxes[:, None, :2] + np.zeros((3, 6, 2))
    scores = np.array([0.9, 0.7, 0.6])
    merged, points, merged_scores, leaders = bf.weighted_nms(boxes, keypoints, scores, 0.3)
    assert len(merged) == 2
    np.testing.assert_allclose(merged[0], [0.4, 0.4, 10.4, 10.4])  # (0.9 * 0 + 0.6 * 1) / 1.5
    np.testing.assert_allclose(points[0], [[0.4, 0.4]] * 6)
    np.testing.assert_allclose(merged[1], boxes[1])
    np.testing.assert_allclose(merged_scores, [0.9, 0.7])  # the best member's score, not a blend
    np.testing.assert_array_equal(leaders, [0, 1])


def test_weighted_nms_blends_only_the_best_candidates_model():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 12.0, 12.0]])
    merged, _, scores, leaders = bf.weighted_nms(boxes, np.zeros((3, 6, 2)), np.array([0.9, 0.6, 0.8]), 0.3,
                                                 ["full_range", "full_range", "short_range"])
    assert len(merged) == 1 and leaders[0] == 0 and scores[0] == 0.9  # the short-range box is suppressed ...
    np.testing.assert_allclose(merged[0], [0.4, 0.4, 10.4, 10.4])  # ... and not blended in


def test_calibrated_boxes():
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
    np.testing.assert_allclose(bf.calibrated(boxes, 0.5, 0.1), [[15.0, 27.0, 25.0, 37.0]])
    np.testing.assert_allclose(bf.calibrated(boxes, 1.0, 0.0), boxes)


def test_weighted_nms_of_nothing():
    boxes, points, scores, leaders = bf.weighted_nms(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0), 0.3)
    assert boxes.shape == (0, 4) and points.shape == (0, 6, 2) and scores.shape == leaders.shape == (0,)


def test_no_face_in_noise_or_flat_pictures(detector):
    rng = np.random.default_rng(0)
    assert detector(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []
    assert detector(np.full((100, 100, 3), 128, np.uint8)) == []


def test_detector_rejects_bad_pictures_and_options(detector):
    with pytest.raises(InputError, match="uint8"):
        detector(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="score"):
        bf.FaceDetector(min_score=1.5)
    with pytest.raises(InputError, match="pass"):
        bf.FaceDetector(passes=())


def test_every_box_encloses_most_of_its_faces_landmarks(detector, dev_photos):
    photos, landmarks, yaw = dev_photos
    matched = [evaluation.match(detector(photo), points) for photo, points in zip(photos, landmarks)]
    found = np.array([m is not None for m in matched])
    assert found.mean() >= 0.95, f"found {found.sum()} of {len(found)} faces"
    shares = [evaluation.enclosed_share(m.box, points) for m, points in zip(matched, landmarks) if m is not None]
    assert np.median(shares) >= 0.9 and min(shares) >= evaluation.MIN_ENCLOSED
    # keypoints in the right order: eyes, nose tip and mouth centre next to the annotation's
    errors = [keypoint_errors(m, points) for m, points in zip(matched, landmarks) if m is not None]
    assert np.median(errors, axis=0).max() < 0.1


def keypoint_errors(detection: bf.Detection, points: np.ndarray) -> np.ndarray:
    """``(4,)`` distances of a detection's eye, nose-tip and mouth-centre keypoints from those of
    the annotated 68 ``points``, over sqrt(w h) of their box."""
    eyes_nose_mouth = landmarks5_from_68(points)
    truth = np.vstack([eyes_nose_mouth[:3], eyes_nose_mouth[3:].mean(0)])
    return np.linalg.norm(detection.keypoints[:4] - truth, axis=-1) / np.sqrt(np.prod(np.ptp(points, 0)))


def test_small_faces_are_refined(detector, dev_photos):
    """Dev photos shrunk into cluttered scenes (faces at 0.1-0.3 of the picture): the short-range
    detections are detected again around the face, and their keypoints come closer to the truth;
    a face large in its photo is left as it was."""
    photos, landmarks, _ = dev_photos
    plain = bf.FaceDetector(refine_below=0.0)
    refined, before, after, start = 0, [], [], 0
    for seed, count in enumerate([2, 3, 4] * 3):
        canvas, matrices = evaluation.tiled_scene(photos[start:start + count], seed)
        found, found_plain = detector(canvas), plain(canvas)
        for matrix, points in zip(matrices, landmarks[start:start + count]):
            points = warp.apply(matrix, points)
            new, old = evaluation.match(found, points), evaluation.match(found_plain, points)
            if new is not None and old is not None and new.source.endswith("@refined"):
                refined += 1
                before.append(keypoint_errors(old, points).mean())
                after.append(keypoint_errors(new, points).mean())
        start += count
    assert refined >= 8, f"{refined} faces refined"
    assert np.median(after) < 0.7 * np.median(before) and max(after) < 0.2, (before, after)
    large = photos[int(np.argmax([np.ptp(points, 0).max() / max(photo.shape) for photo, points in zip(photos, landmarks)]))]
    for new, old in zip(detector(large), plain(large)):
        assert new.source == old.source and np.array_equal(new.box, old.box)
    # where the second run finds no face, the first detection stands
    lone = bf.Detection(np.array([100.0, 100.0, 150.0, 150.0]), np.zeros((6, 2)), 0.9, "short_range")
    assert detector._refined(np.full((400, 400, 3), 120, np.uint8), lone) is lone
    with pytest.raises(InputError, match="refine_below"):
        bf.FaceDetector(refine_below=1.5)


def test_zoomed_out_pass_maps_back_to_the_same_face(dev_photos):
    photos, landmarks, yaw = dev_photos
    model = bf.BlazeFace(bf.SHORT_RANGE)
    frontal = int(np.argmin(np.abs(yaw)))
    results = []
    for zoom in (1.0, 2.0):
        boxes, keypoints, scores = bf.weighted_nms(*bf.DetectionPass(bf.SHORT_RANGE, zoom).candidates(
            model, photos[frontal]), 0.3)[:3]
        results.append((boxes[0], keypoints[0]))
    size = np.ptp(landmarks[frontal], 0).max()
    assert np.abs(results[0][0] - results[1][0]).max() < 0.1 * size
    assert np.abs(results[0][1] - results[1][1]).max() < 0.1 * size


def test_pass_regions_cover_the_picture():
    assert bf.DetectionPass(bf.SHORT_RANGE).regions(100, 200) == [(0.0, -50.0, 200.0)]  # centred square
    assert bf.DetectionPass(bf.SHORT_RANGE, zoom=2.0).regions(100, 100) == [(-50.0, -50.0, 200.0)]
    tiles = bf.DetectionPass(bf.SHORT_RANGE, grid=2).regions(100, 100)
    np.testing.assert_allclose(tiles, [(0, 0, 60), (40, 0, 60), (0, 40, 60), (40, 40, 60)])
    assert bf.DetectionPass(bf.SHORT_RANGE, grid=2).name == "short_range@2x2"
    with pytest.raises(InputError, match="zoom"):
        bf.DetectionPass(bf.SHORT_RANGE, zoom=0.0).regions(10, 10)


def test_tiles_keep_only_faces_inside_them():
    """A face big in the picture is found whole, never as the halves the tiles cut."""
    picture = read_image(REPO_ROOT / "samples" / "astronaut.jpg")
    boxes, _, _ = bf.DetectionPass(bf.SHORT_RANGE, grid=2).candidates(bf.BlazeFace(bf.SHORT_RANGE), picture)
    tiles = bf.DetectionPass(bf.SHORT_RANGE, grid=2).regions(*picture.shape[:2])
    for box in boxes:
        assert any(x0 <= box[0] and y0 <= box[1] and box[2] <= x0 + s and box[3] <= y0 + s for x0, y0, s in tiles)


def test_found_by_yaw():
    table = evaluation.found_by_yaw(np.array([True, False, True, True]), np.array([10.0, -40.0, 45.0, 90.0]))
    assert table == {"[0,30)": (1.0, 1), "[30,60)": (0.5, 2), "[60,90]": (1.0, 1), "all": (0.75, 4)}


def test_match_needs_a_box_of_the_faces_size():
    points = np.array([[10.0, 10.0], [20.0, 20.0], [15.0, 12.0]])
    whole = bf.Detection(np.array([0.0, 0.0, 100.0, 100.0]), np.zeros((6, 2)), 0.9, "short_range")
    fitting = bf.Detection(np.array([9.0, 9.0, 21.0, 21.0]), np.zeros((6, 2)), 0.6, "short_range")
    assert evaluation.match([whole], points) is None
    assert evaluation.match([whole, fitting], points) is fitting
