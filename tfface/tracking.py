"""Faces through a video: detect, crop from the previous fit, smooth over time.

:class:`FaceTracker` follows every face of a video. On the first frame, whenever a face is lost
and every ``redetect_every`` frames (by default every frame, :data:`REDETECT_EVERY`) it runs the
detector (:class:`~tfface.detection.blazeface.FaceDetector`). Each face's crop is the canonical
crop of its previous fit's landmarks
(:func:`~tfface.detection.crops.landmark_framing`), so the network sees it framed as in
training whatever the detector would say. That crop is *anchored* to the detector: when a face is
detected (and on every re-detection of it), the tracker records how the detector's crop differs
from the canonical crop of the fit's landmarks (side ratio, centre offset; :func:`crops.anchor`)
and applies that difference to the crops it derives from later fits, so a model whose landmarks
are systematically too spread or too tight cannot make the crop grow or shrink frame after
frame (version 1's did: 1.2 times per frame). The crop keeps the detector's turn until the
next detection: the networks follow a face's in-plane rotation only in part (version 3 fitted a
turned crop upright in it, give or take a few degrees; version 17's landmarks follow the turn a
third of the way), so turning each crop by the previous fit's roll spun it (version 3: about 6
degrees per frame on a still face, a full turn in 10 frames on a moving one). An export with the
upright pass (:mod:`tfface.upright_pass`) fits each crop again turned upright inside the model.
A face is *lost* when its fit is invalid, its ``face_score`` drops below ``face_threshold``, its
crop jumps (side changing by more than :data:`MAX_SIDE_CHANGE` times, or centre moving more than
:data:`MAX_CENTRE_JUMP` crop sides, between frames: a fit that has slid off the face) or its
side drifts more than :data:`MAX_SIDE_DRIFT` times from the detector's crop of it; a lost face
is looked for by the detector in the same frame. A detection whose crop overlaps a lost face's
last crop continues that face (same id, same filters). Every ``redetect_every`` frames the
detector also looks for new faces; a detection whose crop lies mostly (more than
:data:`SAME_FACE_COVER`) inside a followed face's crop, or overlaps it, is that face, and
re-anchors it.

What each face reports is smoothed by One-Euro filters (:class:`OneEuroFilter`, Casiez, Roussel
and Vogel, CHI 2012): a low-pass filter whose cutoff rises with the speed of the signal, so a
still face stops jittering while a moving one is followed with little lag. Its parameters
(:class:`Smoothing`) are exposed on the command line. Landmarks and the projected mesh are
filtered in picture pixels with speeds measured in face sizes (crop sides) per second, so the
parameters do not depend on the picture's resolution; the head pose (yaw, pitch, roll) and the
camera translation are filtered alongside.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from tfface.detection import crops
from tfface.detection.blazeface import FaceDetector, box_iou, covered_share
from tfface.detection.pipeline import Face, Runner, reconstruct_framings
from tfface.errors import InputError
from tfface.io.records import head_pose_degrees

#: A tracked crop whose side changes by more than this factor between frames is lost.
MAX_SIDE_CHANGE = 1.5
#: A tracked crop whose side drifts more than this many times from the detector's crop at the last
#: detection of its face is lost (the fits of a face, each framed by the last, compound their
#: scale errors; a few per cent a frame grew version 3's crops 2.6 times in 6 frames).
MAX_SIDE_DRIFT = 1.3
#: A tracked crop whose centre moves by more than this many crop sides between frames is lost.
MAX_CENTRE_JUMP = 0.5
#: Frames between detector runs on followed faces (new faces, re-anchoring). Every frame: the crop
#: is then the previous frame's detector crop, and no fit's placement error carries into the next
#: crop. On the four test clips of ``tools/bench_video_jitter.py`` (version 7) it lowers the raw
#: jitter and tracking error on every clip against every 10th frame (the tracking error of one
#: clip from 12.6 to 5.1% of the face size) at about the same frames/s (BUILD.md, "Videos").
REDETECT_EVERY = 1

#: A detection's crop with more than this share inside a tracked face's crop is that face.
SAME_FACE_COVER = 0.5


class OneEuroFilter:
    """The One-Euro filter of an array-valued signal (every element filtered on its own).

    Args:
        min_cutoff: cutoff frequency (Hz) of a still signal: lower smooths more.
        beta: how fast the cutoff rises with speed (per unit of speed, see ``scale`` of
            :meth:`__call__`): higher follows fast motion with less lag.
        d_cutoff: cutoff frequency (Hz) of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if not (min_cutoff > 0 and d_cutoff > 0 and beta >= 0):
            raise InputError(f"One-Euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got "
                             f"{min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        """Smoothing factor of a first-order low-pass filter at ``cutoff`` Hz for a step of ``dt`` s."""
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        """Forget the past: the next value passes unchanged."""
        self._value = self._speed = self._time = None

    def __call__(self, value: np.ndarray, time: float, scale: float = 1.0) -> np.ndarray:
        """Filter one sample.

        Args:
            value: the sample (any shape, the same every call).
            time: its time in seconds (increasing).
            scale: the unit speeds are measured in (e.g. the face size in pixels for pixel
                positions): the cutoff is ``min_cutoff + beta |speed| / scale``.

        Returns:
            The filtered sample (float64, ``value``'s shape).
        """
        value = np.asarray(value, np.float64)
        if self._value is None:
            self._value, self._speed, self._time = value, np.zeros_like(value), float(time)
            return value
        if self._value.shape != value.shape:
            raise InputError(f"One-Euro filter got shape {value.shape} after {self._value.shape}")
        dt = float(time) - self._time
        if not dt > 0:
            raise InputError(f"One-Euro filter needs increasing times, got {time} after {self._time}")
        speed = (value - self._value) / dt
        self._speed = self._speed + self._alpha(self.d_cutoff, dt) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed) / scale
        self._value = self._value + self._alpha(cutoff, dt) * (value - self._value)
        self._time = float(time)
        return self._value


@dataclasses.dataclass(frozen=True)
class Smoothing:
    """One-Euro parameters for every tracked quantity (see :class:`OneEuroFilter`).

    Attributes:
        min_cutoff: Hz; cutoff of a still face (lower: steadier, more lag when it starts to move).
        beta: per (face size per second) for positions, per (radian per second) for angles,
            per (100 mm per second) for the camera translation.
        d_cutoff: Hz; cutoff of the speed estimate.
        enabled: False passes everything through unfiltered.
    """

    min_cutoff: float = 1.0
    beta: float = 1.0
    d_cutoff: float = 1.0
    enabled: bool = True

    def filter(self) -> OneEuroFilter:
        """A fresh filter with these parameters."""
        return OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)


#: Quantities of :attr:`Face.picture` smoothed in picture pixels (speed in crop sides).
PIXEL_KEYS = ("landmarks68", "landmarks5", "mesh2d")


@dataclasses.dataclass
class Track:
    """One face followed through the video.

    Attributes:
        id: the track's number (in order of first appearance).
        face: its latest reconstruction (unsmoothed).
        smoothed: the smoothed ``landmarks68``, ``landmarks5``, ``mesh2d`` (picture pixels),
            ``head_pose_degrees`` (dict) and ``t`` (mm) of the latest frame.
        frames: frames it has been seen in.
        anchor: the detector's crop relative to the fit's canonical crop at the last detection
            (:func:`tfface.detection.crops.anchor`).
        detected: the detector's crop at the last detection.
        filters: its One-Euro filters by quantity.
    """

    id: int
    face: Face
    smoothed: dict
    frames: int = 1
    anchor: tuple[float, np.ndarray] = (1.0, np.zeros(2))
    detected: crops.Framing | None = None
    filters: dict[str, OneEuroFilter] = dataclasses.field(default_factory=dict, repr=False)

    def next_framing(self) -> crops.Framing:
        """The crop of the next frame: the anchored canonical crop of this frame's fit."""
        return crops.anchored(fit_framing(self.face), self.anchor)

    def reanchor(self, framing: crops.Framing) -> None:
        """Anchor to a detector crop ``framing`` of this frame's face."""
        self.anchor = crops.anchor(fit_framing(self.face), framing)
        self.detected = framing


def fit_framing(face: Face) -> crops.Framing:
    """The canonical crop of a face's fitted landmarks, turned as the crop it was fitted in (see
    the module docstring: the crop's roll comes from the detector, not the fit)."""
    return crops.landmark_framing(face.picture["landmarks68"], -math.degrees(face.framing.angle))


def _pose_vector(face: Face) -> np.ndarray:
    """Yaw, pitch, roll (radians) of a face's picture camera."""
    pose = head_pose_degrees(face.picture["R"])
    return np.radians([pose["yaw"], pose["pitch"], pose["roll"]])


def _unwrapped(angles: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``angles`` moved by whole turns to lie within half a turn of ``previous`` (radians)."""
    return previous + (angles - previous + math.pi) % (2 * math.pi) - math.pi


class FaceTracker:
    """Every face of a video, frame by frame (see the module docstring).

    Args:
        detector: finds faces on the first frame, when a face is lost and every
            ``redetect_every`` frames.
        runner: the model (:data:`tfface.detection.pipeline.Runner`).
        fps: the video's frame rate (the filters' clock).
        smoothing: One-Euro parameters.
        max_faces: follow at most this many faces.
        face_threshold: a face whose ``face_score`` falls below this is lost.
        redetect_every: run the detector every this many frames, for new faces and to re-anchor the
            followed ones (0: only when a face is lost).
        template: :func:`~tfface.detection.crops.detection_template` of the model's 3DMM
            (default: the default model's).
    """

    def __init__(self, detector: FaceDetector, runner: Runner, fps: float, smoothing: Smoothing = Smoothing(),
                 max_faces: int | None = None, face_threshold: float = 0.05, redetect_every: int = REDETECT_EVERY,
                 template: np.ndarray | None = None):
        if not fps > 0:
            raise InputError(f"frame rate must be positive, got {fps}")
        self.detector, self.runner, self.fps = detector, runner, float(fps)
        self.smoothing, self.max_faces = smoothing, max_faces
        self.face_threshold, self.redetect_every = face_threshold, int(redetect_every)
        self.template = crops.default_detection_template() if template is None else template
        self.tracks: list[Track] = []
        self.frame = -1
        self._next_id = 0

    def _valid(self, face: Face) -> bool:
        """Whether the model saw a face: a valid fit with ``face_score`` at the threshold."""
        return face.fit_valid and float(face.outputs["face_score"]) >= self.face_threshold

    @staticmethod
    def _steady(track: Track) -> bool:
        """Whether the track's next crop stays near the crop of its latest face (see the module docstring)."""
        follow, previous = track.next_framing(), track.face.framing
        ratio, drift = follow.side / previous.side, follow.side / track.detected.side
        jump = np.linalg.norm(follow.centre - previous.centre) / previous.side
        return (1 / MAX_SIDE_CHANGE <= ratio <= MAX_SIDE_CHANGE and 1 / MAX_SIDE_DRIFT <= drift <= MAX_SIDE_DRIFT
                and jump <= MAX_CENTRE_JUMP)

    def _same_face(self, framing: crops.Framing, other: crops.Framing) -> float:
        """How much two crops are one face: their IoU, or 1 when ``framing`` lies mostly inside ``other``."""
        square, other_square = framing.square(), other.square()
        if covered_share(square, other_square) > SAME_FACE_COVER:
            return 1.0
        return float(box_iou(square, other_square[None])[0])

    def _detect(self, picture: np.ndarray, followed: Sequence[Track]) -> list[Face]:
        """Faces the detector finds that are none of the ``followed`` faces, reconstructed; a
        detection of a followed face re-anchors it."""
        room = None if self.max_faces is None else self.max_faces - len(followed)
        detections, framings = [], []
        for detection in self.detector(picture):
            framing = crops.detection_framing(detection, self.template)
            same = [t for t in followed if self._same_face(framing, t.face.framing) > self.detector.iou_threshold]
            if same:
                same[0].reanchor(framing)
            else:
                detections.append(detection)
                framings.append(framing)
        if room is not None:
            detections, framings = detections[:max(room, 0)], framings[:max(room, 0)]
        faces = reconstruct_framings(picture, framings, self.runner, detections)
        return [face for face in faces if self._valid(face)]

    def _claim(self, face: Face, lost: list[Track]) -> Track:
        """The lost track whose last crop is most ``face``'s (removed from ``lost``), or a new
        track; either anchored to ``face``'s detector crop."""
        overlaps = [self._same_face(face.framing, t.face.framing) for t in lost]
        if overlaps and max(overlaps) > self.detector.iou_threshold:
            track = lost.pop(int(np.argmax(overlaps)))
            track.face, track.frames = face, track.frames + 1
        else:
            track = Track(self._next_id, face, {})
            self._next_id += 1
        track.reanchor(face.framing)
        return track

    def _smooth(self, track: Track, time: float) -> None:
        face, smoothing = track.face, self.smoothing
        pose = _pose_vector(face)
        if track.smoothed:  # keep angles continuous across +-180 degrees for the filter
            pose = _unwrapped(pose, np.radians(list(track.smoothed["head_pose_degrees"].values())))
        raw = {**{key: face.picture[key] for key in PIXEL_KEYS}, "pose": pose, "t": face.picture["t"]}
        if not smoothing.enabled:
            values = raw
        else:
            scales = {**{key: face.framing.side for key in PIXEL_KEYS}, "pose": 1.0, "t": 100.0}
            for key in raw:
                track.filters.setdefault(key, smoothing.filter())
            values = {key: track.filters[key](raw[key], time, scales[key]) for key in raw}
        track.smoothed = {**{key: values[key] for key in PIXEL_KEYS}, "t": values["t"],
                          "head_pose_degrees": dict(zip(("yaw", "pitch", "roll"), np.degrees(values["pose"]).tolist()))}

    def __call__(self, picture: np.ndarray) -> list[Track]:
        """Follow the faces into the next frame.

        Args:
            picture: ``(H, W, 3)`` uint8 RGB frame.

        Returns:
            The tracks seen in this frame (their ``face`` and ``smoothed`` are this frame's).
        """
        self.frame += 1
        time = self.frame / self.fps
        followed: list[Track] = []
        lost: list[Track] = []
        if self.tracks:
            framings = [t.next_framing() for t in self.tracks]
            faces = reconstruct_framings(picture, framings, self.runner, [t.face.detection for t in self.tracks])
            for track, face in zip(self.tracks, faces):
                if self._valid(face):
                    track.face, track.frames = face, track.frames + 1
                    if self._steady(track):
                        followed.append(track)
                        continue
                lost.append(track)
        if not self.tracks or lost or (self.redetect_every and self.frame % self.redetect_every == 0):
            followed += [self._claim(face, lost) for face in self._detect(picture, followed)]
        self.tracks = sorted(followed, key=lambda track: track.id)
        for track in self.tracks:
            self._smooth(track, time)
        return self.tracks
