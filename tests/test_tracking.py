"""One-Euro filtering and face tracking through video frames (fake detector and model, then the real ones)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfface.data.framing import template_landmarks68
from tfface.detection import crops, warp
from tfface.detection.blazeface import Detection, FaceDetector
from tfface.errors import InputError
from tfface.export import ExportedModel
from tfface.io.images import read_image
from tfface.paths import REPO_ROOT
from tfface.reconstruct import DEFAULT_MODEL
from tfface.tracking import REDETECT_EVERY, FaceTracker, OneEuroFilter, Smoothing


def test_one_euro_passes_constants_and_starts_at_the_first_value():
    filt = OneEuroFilter(1.0, 0.5)
    for i in range(5):
        np.testing.assert_allclose(filt(np.array([3.0, -2.0]), i / 30), [3.0, -2.0])


def test_one_euro_without_beta_is_an_exponential_smoother():
    filt = OneEuroFilter(min_cutoff=2.0, beta=0.0)
    filt(np.zeros(1), 0.0)
    alpha = 1 / (1 + 1 / (2 * math.pi * 2.0) / 0.1)
    np.testing.assert_allclose(filt(np.ones(1), 0.1), [alpha])


def test_one_euro_steadies_noise_and_beta_cuts_the_lag_of_motion():
    rng = np.random.default_rng(0)
    times = np.arange(120) / 30.0
    noise = rng.normal(0, 1.0, (120, 4))
    still = OneEuroFilter(1.0, 0.0)
    filtered = np.array([still(n, t) for n, t in zip(noise, times)])
    assert np.abs(np.diff(filtered[10:], axis=0)).mean() < 0.3 * np.abs(np.diff(noise[10:], axis=0)).mean()
    ramp = 30.0 * times  # 30 units per second
    lags = []
    for beta in (0.0, 1.0):
        filt = OneEuroFilter(1.0, beta)
        out = np.array([filt(np.array([r]), t)[0] for r, t in zip(ramp, times)])
        lags.append((ramp - out)[-1] / 30.0)  # seconds behind
    assert lags[1] < 0.2 * lags[0]


def test_one_euro_rejects_bad_parameters_and_samples():
    with pytest.raises(InputError, match="min_cutoff"):
        OneEuroFilter(0.0)
    filt = OneEuroFilter()
    filt(np.zeros(2), 1.0)
    with pytest.raises(InputError, match="increasing"):
        filt(np.zeros(2), 1.0)
    with pytest.raises(InputError, match="shape"):
        filt(np.zeros(3), 2.0)
    filt.reset()
    np.testing.assert_array_equal(filt(np.ones(3), 0.0), np.ones(3))


# ---------------------------------------------------------------- tracking logic on fakes
SIZE = 64


class FakeRunner:
    """Puts the mean face's canonical landmarks in every crop (spread ``spread`` times about the
    crop centre); no face where the crop is dark."""

    image_size = SIZE

    def __init__(self, template68: np.ndarray, spread: float = 1.0, roll_degrees: float = 0.0):
        self.template68 = ((template68 - 0.5) * spread + 0.5) * SIZE
        turn = math.radians(roll_degrees)  # the fitted head turned about the optical axis, the landmarks not
        c, s = math.cos(turn), math.sin(turn)
        self.R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])
        self.calls = 0

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        n = len(images)
        K = np.array([[300.0, 0.0, SIZE / 2], [0.0, 300.0, SIZE / 2], [0.0, 0.0, 1.0]])
        bright = images.reshape(n, -1).mean(-1) > 20
        return {"landmarks68": np.repeat(self.template68[None], n, 0), "landmarks5": np.zeros((n, 5, 2)),
                "K": np.repeat(K[None], n, 0), "R": np.repeat(self.R[None], n, 0),
                "t": np.repeat([[0.0, 0.0, 500.0]], n, 0), "vertices": np.zeros((n, 3, 3)),
                "face_score": np.where(bright, 0.5, 0.0), "fit_valid": np.ones(n)}


class FakeDetector:
    """Returns the boxes it is told (one list per call), counting its calls."""

    iou_threshold = 0.3

    def __init__(self, template: np.ndarray):
        self.template, self.boxes, self.calls = template, [], 0

    def __call__(self, picture, max_faces=None):
        self.calls += 1
        detections = []
        for box in self.boxes:
            box = np.asarray(box, np.float64)
            side = box[2] - box[0]
            keypoints = np.vstack([box[:2] + (self.template - 0.5) * side / crops.BOX_CROP_SCALE
                                   + side / 2, np.zeros((2, 2))])
            detections.append(Detection(box, keypoints, 0.9, "fake"))
        return detections[:max_faces]


@pytest.fixture(scope="module")
def fakes(default_model):
    template68 = template_landmarks68(default_model)
    return lambda: (FakeDetector(crops.detection_template(default_model)), FakeRunner(template68))


def _frame(bright_boxes=((40, 40, 120, 120),)) -> np.ndarray:
    picture = np.zeros((240, 320, 3), np.uint8)
    for x0, y0, x1, y1 in bright_boxes:
        picture[y0:y1, x0:x1] = 200
    return picture


def test_tracker_detects_once_then_follows_the_fit(fakes):
    detector, runner = fakes()
    detector.boxes = [(50, 50, 110, 110)]
    tracker = FaceTracker(detector, runner, fps=30, redetect_every=0, smoothing=Smoothing(enabled=False))
    for _ in range(5):
        tracks = tracker(_frame())
        assert [t.id for t in tracks] == [0]
    assert detector.calls == 1 and tracks[0].frames == 5
    assert tracks[0].face.framing.method == "landmarks"
    # the canonical landmarks of a canonical crop reproduce the crop: a fixed point
    side = tracks[0].face.framing.side
    np.testing.assert_allclose(crops.landmark_framing(tracks[0].face.picture["landmarks68"]).side, side)


def test_tracker_crops_stay_anchored_to_the_detector(default_model):
    """A model whose landmarks are 20% too spread would grow the crop 1.2 times a frame; anchored to
    the detector's crop, it stays that crop."""
    detector = FakeDetector(crops.detection_template(default_model))
    detector.boxes = [(50, 50, 110, 110)]
    tracker = FaceTracker(detector, FakeRunner(template_landmarks68(default_model), spread=1.2), fps=30,
                          redetect_every=0)
    first = tracker(_frame())[0].face.framing
    for _ in range(6):
        (track,) = tracker(_frame())
    assert track.id == 0 and detector.calls == 1 and track.face.framing.method == "landmarks"
    np.testing.assert_allclose(track.face.framing.side, first.side, rtol=1e-6)
    np.testing.assert_allclose(track.face.framing.centre, first.centre, atol=1e-6)


def test_tracker_crops_do_not_spin_with_a_leaning_roll(default_model):
    """A model whose fitted roll leans 6 degrees in every crop, landmarks upright, turned the crop
    6 degrees a frame when crops followed the fit's roll; they keep the detector's turn."""
    from tfface.io.records import head_pose_degrees

    runner = FakeRunner(template_landmarks68(default_model), roll_degrees=6.0)
    assert abs(abs(head_pose_degrees(runner.R)["roll"]) - 6.0) < 1e-6
    detector = FakeDetector(crops.detection_template(default_model))
    detector.boxes = [(50, 50, 110, 110)]
    tracker = FaceTracker(detector, runner, fps=30, redetect_every=0)
    first = tracker(_frame())[0].face.framing
    for _ in range(6):
        (track,) = tracker(_frame())
    assert track.id == 0 and detector.calls == 1 and track.face.framing.method == "landmarks"
    assert math.isclose(track.face.framing.angle, first.angle, abs_tol=1e-9)
    np.testing.assert_allclose(track.face.framing.side, first.side, rtol=1e-6)
    np.testing.assert_allclose(track.face.framing.centre, first.centre, atol=1e-6)


def test_a_crop_drifting_from_the_detector_loses_the_face_and_is_detected_again(default_model):
    """Fits whose landmarks turn 10% too spread after the detection grow each next crop 1.1 times
    (under the per-frame jump bound): the crop that would be 1.33 times the detector's loses the
    face, which is detected again in that frame and anchored anew (steady from then on)."""
    template68 = template_landmarks68(default_model)
    detector, runner = FakeDetector(crops.detection_template(default_model)), FakeRunner(template68)
    detector.boxes = [(50, 50, 110, 110)]
    tracker = FaceTracker(detector, runner, fps=30, redetect_every=0)
    first = tracker(_frame())[0].face.framing
    runner.template68 = ((template68 - 0.5) * 1.1 + 0.5) * SIZE
    sides = []
    for _ in range(6):
        (track,) = tracker(_frame())
        sides.append(track.face.framing.side / first.side)
    assert track.id == 0 and detector.calls == 2
    np.testing.assert_allclose(sides, [1.0, 1.1, 1.0, 1.0, 1.0, 1.0], rtol=1e-6)


def test_tracker_redetects_when_the_face_is_lost(fakes):
    detector, runner = fakes()
    detector.boxes = [(50, 50, 110, 110)]
    tracker = FaceTracker(detector, runner, fps=30, redetect_every=0)
    tracker(_frame())
    assert tracker(_frame(())) == [] and detector.calls == 2  # dark: lost, detector asked again, nothing kept
    detector.boxes = [(180, 60, 240, 120)]
    tracks = tracker(_frame(((170, 50, 250, 130),)))
    assert [t.id for t in tracks] == [1] and detector.calls == 3


def test_tracker_adds_new_faces_without_duplicating_tracked_ones(fakes):
    detector, runner = fakes()
    detector.boxes = [(50, 50, 110, 110)]
    tracker = FaceTracker(detector, runner, fps=30, redetect_every=2, max_faces=2)
    tracker(_frame(((40, 40, 120, 120), (170, 50, 250, 130))))
    detector.boxes = [(50, 50, 110, 110), (180, 60, 240, 120)]
    both = ((40, 40, 120, 120), (170, 50, 250, 130))
    assert [t.id for t in tracker(_frame(both))] == [0]  # frame 1: no detection asked
    assert [t.id for t in tracker(_frame(both))] == [0, 1]  # frame 2: the new face only
    detector.boxes.append((10, 150, 60, 200))
    tracker(_frame(both))
    assert [t.id for t in tracker(_frame(both))] == [0, 1]  # max_faces


def test_reconstruct_command_video_defaults_are_the_trackers():
    """The CLI repeats the tracker's defaults (it does not import TensorFlow to build its parser)."""
    from tfface.cli import build_parser

    args = build_parser().parse_args(["reconstruct", "clip.mp4", "--out", "out"])
    assert args.redetect_every == REDETECT_EVERY
    assert Smoothing(args.smooth_min_cutoff, args.smooth_beta, args.smooth_d_cutoff, not args.no_smooth) == Smoothing()


def test_tracker_rejects_a_bad_frame_rate(fakes):
    detector, runner = fakes()
    with pytest.raises(InputError, match="frame rate"):
        FaceTracker(detector, runner, fps=0)


# ---------------------------------------------------------------- the real detector and model
def test_smoothing_steadies_a_real_face_moving_smoothly():
    """The astronaut photo slid and turned a little per frame, with pixel noise: one track, and the
    smoothed landmarks move less from frame to frame (the known motion removed) than the raw ones."""
    photo = read_image(REPO_ROOT / "samples" / "astronaut.jpg")
    runner, detector = ExportedModel(DEFAULT_MODEL), FaceDetector()
    rng = np.random.default_rng(1)
    tracker = FaceTracker(detector, runner, fps=30)
    raw, smooth = [], []
    for i in range(16):
        motion = crops.Framing(np.array([256.0 + 2 * i, 256.0 - i]), 512.0, math.radians(0.5 * i)).matrix(384)
        frame = warp.warp(photo, motion, 384).astype(np.float64) + rng.normal(0, 4, (384, 384, 3))
        tracks = tracker(np.clip(frame, 0, 255).astype(np.uint8))
        assert [t.id for t in tracks] == [0]
        back = np.linalg.inv(motion)  # into the photo: the face does not move there
        raw.append(warp.apply(back, tracks[0].face.picture["landmarks68"]))
        smooth.append(warp.apply(back, tracks[0].smoothed["landmarks68"]))
    step = lambda points: np.linalg.norm(np.diff(np.array(points[4:]), axis=0), axis=-1).mean()  # noqa: E731
    assert step(smooth) < step(raw)
