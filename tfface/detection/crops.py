"""Face crops framed the way the network was trained, and the way back to the original picture.

The network sees *canonical* crops (:mod:`tfface.data.framing`): the square of side 1.5 times
the longer side of the face's 68-landmark box, centred on that box. A crop here is a
:class:`Framing` (centre, side, in-plane angle) in picture pixels; its matrix ``A`` maps picture
pixels to crop pixels, the crop is warped by ``A`` (:func:`tfface.detection.warp.warp`), and
everything the model returns in crop pixels comes back by ``A^-1``: points by
:func:`to_original`, the camera by :func:`camera_to_original`.

From a detection (:func:`detection_framing`), measured against the canonical crops of the 994
faces BlazeFace finds among the 1,000 AFLW2000-3D dev photos:

* *centre and side come from the detector's box*: side :data:`BOX_CROP_SCALE` times the box
  side, centre :data:`BOX_CROP_SHIFT` box sides below the box centre (the medians over those
  faces; per yaw bin the scale is 1.43, 1.45, 1.46 before the full-range boxes were calibrated to
  the short-range ones, :data:`tfface.detection.blazeface.FULL_RANGE`). Centre error of the
  canonical crop seen in ours, median / 90th percentile in crop sides: 0.031 / 0.063 at
  |yaw| < 30, 0.045 / 0.086 at 30-60, 0.041 / 0.084 at 60-90; side error (|log| of the ratio)
  0.053 / 0.130, 0.049 / 0.148, 0.062 / 0.188. The similarity fit of the keypoints to the mean
  face's (below) frames frontal faces about as well (centre 0.072 / 0.132 below 30), but shifts
  the crop sideways with the yaw (0.13 crop sides at 30 degrees): the 68-landmark box of a
  turned face is not centred where the mean frontal face puts it relative to the eyes, nose and
  mouth;
* *the angle comes from the keypoints*: the rotation of the least-squares similarity
  (:func:`tfface.data.framing.fit_similarity`) taking the detected eye centres, nose tip and
  mouth centre onto the mean face's (:func:`detection_template`), which turns the crop so the
  face is upright. Its error against the dev photos' roll is 3 degrees (median) at
  |yaw| < 30, but 13 at 30-60 and 24 beyond. So only a face seen nearly from the front (eye
  distance over eye-mouth distance at least :data:`MIN_EYE_RATIO` of the mean face's) is turned;
  a turned face keeps an upright crop (angle 0, the detector box alone), as the ground-truth
  crops of the evaluation protocol are. Measured with ``tools/bench_detect_reconstruct.py`` and
  ``savedmodel/tfface_ict/2`` on the 1,000 dev photos (box NME %, |yaw| bins [0,30) / [30,60) /
  [60,90]): every crop turned when the eyes are not degenerate (ratio >= 0.5): 15.45 / 34.74 /
  38.35; no crop turned (``--no-keypoint-turn``): 16.96 / 29.84 / 38.25; this rule: 15.51 / 34.26 /
  38.37. Face by face at |yaw| 15-60 the turned crop scores as well or better (medians 17.4 vs
  18.9 at 15-30, 26.5 vs 26.6 at 30-45, 31.4 vs 31.4 at 45-60); the [30,60) means are moved by
  single fits the model reports valid with a box NME of several hundred % (one face alone adds
  4.6 points to that bin's mean).

For video (:mod:`tfface.tracking`), :func:`landmark_framing` frames the next crop canonically
from the previous frame's fitted landmarks, turned as the detector turned it.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from tfface.data.framing import fit_similarity, landmark_crop, template_landmarks5
from tfface.detection import warp
from tfface.detection.blazeface import LEFT_EYE, MOUTH_CENTRE, NOSE_TIP, RIGHT_EYE, Detection
from tfface.errors import InputError
from tfface.geometry.camera import project
from tfface.io.records import head_pose_degrees
from tfface.morphable.model import MorphableModel

#: Crop side over the detector box's side (median over the dev photos; see the module docstring).
BOX_CROP_SCALE = 1.46
#: Crop centre below the detector box's centre, in box sides (median over the dev photos).
BOX_CROP_SHIFT = 0.054
#: Keypoints whose eye distance over eye-mouth distance is below this fraction of the mean
#: face's belong to a face turned too far for their fit's angle (see the module docstring): the
#: crop is not turned by it. Above it: all faces of |yaw| < 15 on the dev photos, 97% at 15-30,
#: 47% at 30-45, 7% at 45-60, 1% beyond.
MIN_EYE_RATIO = 0.8
#: The detector keypoints the framing uses, in :func:`detection_template` order.
FRAMING_KEYPOINTS = (RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH_CENTRE)


def detection_template(model: MorphableModel) -> np.ndarray:
    """``(4, 2)`` unit crop positions of the mean face's eye centres, nose tip and mouth centre.

    The detector's keypoints :data:`FRAMING_KEYPOINTS` in the canonical crop of the mean face
    (:func:`tfface.data.framing.template_landmarks5`; the mouth centre is the mean of its two
    corners).
    """
    template5 = template_landmarks5(model).astype(np.float64)
    return np.vstack([template5[:3], template5[3:].mean(0, keepdims=True)])


@functools.cache
def default_detection_template() -> np.ndarray:
    """:func:`detection_template` of the default model (:func:`tfface.morphable.loaders.load_default_model`),
    loaded once per process."""
    from tfface.morphable.loaders import load_default_model

    return detection_template(load_default_model())


def _turn(angle: float) -> np.ndarray:
    """``(2, 2)`` rotation turning picture points counter-clockwise as seen (y down) by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, s], [-s, c]])


def eye_ratio(points: np.ndarray) -> float:
    """Eye distance over the distance from the eyes' midpoint to the mouth centre.

    Args:
        points: ``(4, 2)`` right eye, left eye, nose tip, mouth centre.
    """
    points = np.asarray(points, np.float64)
    eyes = np.linalg.norm(points[1] - points[0])
    mouth = np.linalg.norm(points[3] - (points[0] + points[1]) / 2)
    return float(eyes / mouth) if mouth > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Framing:
    """A square crop of a picture.

    Attributes:
        centre: ``(2,)`` crop centre in picture pixels.
        side: crop side in picture pixels.
        angle: radians the picture is turned by (counter-clockwise as seen, i.e. from +x
            towards -y) to make the face upright in the crop.
        method: how it was framed: ``"keypoints"`` (box, turned by the keypoints),
            ``"box"`` (detector box alone), ``"landmarks"`` (:func:`landmark_framing`) or
            ``"upright"`` (:func:`upright_framing`).
    """

    centre: np.ndarray
    side: float
    angle: float = 0.0
    method: str = "box"

    def square(self) -> np.ndarray:
        """``(4,)`` x0, y0, x1, y1 of the crop's square, its turn ignored."""
        half = self.side / 2
        return np.concatenate([np.asarray(self.centre, np.float64) - half, np.asarray(self.centre, np.float64) + half])

    def matrix(self, size: int) -> np.ndarray:
        """``(3, 3)`` similarity from picture pixels to the pixels of a ``size``-pixel crop."""
        if not self.side > 0:
            raise InputError(f"a crop needs a positive side, got {self.side}")
        linear = size / self.side * _turn(self.angle)
        matrix = np.eye(3)
        matrix[:2, :2], matrix[:2, 2] = linear, size / 2 - linear @ np.asarray(self.centre, np.float64)
        return matrix


def detection_framing(detection: Detection, template: np.ndarray) -> Framing:
    """The crop of a detected face (see the module docstring).

    Args:
        detection: a face found by :class:`~tfface.detection.blazeface.FaceDetector`.
        template: :func:`detection_template` of the model.

    Returns:
        The framing: centre and side from the box, angle from the keypoints unless they are
        degenerate (``method`` ``"keypoints"`` or ``"box"``).
    """
    box = np.asarray(detection.box, np.float64)
    side = float(np.mean(box[2:] - box[:2]))
    if not side > 0:
        raise InputError(f"detection box {box.tolist()} has no area")
    points = np.asarray(detection.keypoints, np.float64)[list(FRAMING_KEYPOINTS)]
    angle, method = 0.0, "box"
    if eye_ratio(points) >= MIN_EYE_RATIO * eye_ratio(template):
        similarity = fit_similarity(points, template)
        angle, method = -math.atan2(similarity[1, 0], similarity[0, 0]), "keypoints"
    # the shift points down the upright face, i.e. along the crop's y axis in the picture
    down = np.array([-math.sin(angle), math.cos(angle)])
    centre = (box[:2] + box[2:]) / 2 + BOX_CROP_SHIFT * side * down
    return Framing(centre, BOX_CROP_SCALE * side, angle, method)


def landmark_framing(points68: np.ndarray, roll_degrees: float = 0.0) -> Framing:
    """The canonical crop of a face with known 68 landmarks, turned upright by its roll.

    Args:
        points68: ``(68, 2)`` landmark pixels of the face.
        roll_degrees: the face's in-plane rotation (``head_pose_degrees`` roll of
            :mod:`tfface.io.records`, positive when the face is turned counter-clockwise as
            seen); the crop is the canonical one of the landmarks turned back (clockwise) by it.

    Returns:
        A ``"landmarks"`` framing.
    """
    angle = -math.radians(roll_degrees)
    turn = _turn(angle)
    x0, y0, side = landmark_crop(np.asarray(points68, np.float64) @ turn.T)  # in the upright frame
    centre = turn.T @ np.array([x0 + side / 2, y0 + side / 2])
    return Framing(centre, float(side), angle, "landmarks")


def upright_framing(framing: Framing, rotation: np.ndarray) -> Framing:
    """``framing`` turned upright by a fit of its face: the same centre and side, turned by the
    fit's roll as :func:`landmark_framing` turns its crop.

    Args:
        framing: the crop the face was fitted in.
        rotation: ``(3, 3)`` the fit's camera rotation in the picture (``R`` of
            :func:`outputs_to_original`; its roll is ``head_pose_degrees``' of :mod:`tfface.io.records`).

    Returns:
        An ``"upright"`` framing.
    """
    roll = head_pose_degrees(np.asarray(rotation, np.float64))["roll"]
    return Framing(np.asarray(framing.centre, np.float64), framing.side, -math.radians(roll), "upright")


def anchor(framing: Framing, reference: Framing) -> tuple[float, np.ndarray]:
    """How ``reference`` differs from ``framing``: its side over ``framing``'s, and its centre's
    offset in ``framing``'s upright frame, in ``framing``'s sides (undone by :func:`anchored`)."""
    offset = _turn(framing.angle) @ (np.asarray(reference.centre, np.float64) - framing.centre) / framing.side
    return reference.side / framing.side, offset


def anchored(framing: Framing, difference: tuple[float, np.ndarray]) -> Framing:
    """``framing`` changed by an :func:`anchor` difference (its angle kept)."""
    scale, offset = difference
    centre = np.asarray(framing.centre, np.float64) + _turn(framing.angle).T @ np.asarray(offset) * framing.side
    return Framing(centre, framing.side * scale, framing.angle, framing.method)


def crop(picture: np.ndarray, framing: Framing, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp the crop out of a picture.

    Args:
        picture: ``(H, W, 3)`` uint8 RGB.
        framing: the crop.
        size: the model's input side in pixels.

    Returns:
        ``(size, size, 3)`` uint8 crop and its ``(3, 3)`` picture-to-crop matrix ``A``.
    """
    matrix = framing.matrix(size)
    return warp.warp(picture, matrix, size), matrix


def to_original(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map ``(..., 2)`` crop pixels back to picture pixels (``A^-1``, ``A`` = picture to crop)."""
    return warp.apply(np.linalg.inv(matrix), points)


def intrinsics_to_original(K: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The projection matrix's intrinsic part in picture pixels: ``A^-1 K``.

    ``x_crop ~ K X_cam`` and ``x_crop = A x_picture`` give ``x_picture ~ A^-1 K X_cam``. For a
    turned crop this is not upper triangular; :func:`camera_to_original` factors it.

    Args:
        K: ``(3, 3)`` intrinsics in crop pixels.
        matrix: ``(3, 3)`` picture-to-crop matrix ``A``.
    """
    return np.linalg.solve(np.asarray(matrix, np.float64), np.asarray(K, np.float64))


def camera_to_original(K: np.ndarray, R: np.ndarray, t: np.ndarray,
                       matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The camera of a crop as a camera of the picture: upper-triangular ``K``, rotation, translation.

    ``A^-1 K = K' Q`` with ``K'`` upper triangular (positive diagonal, last row ``[0, 0, 1]``) and
    ``Q`` a rotation about the optical axis (an RQ decomposition of the top-left 2 x 2 block);
    ``Q`` moves into the extrinsics: ``R' = Q R``, ``t' = Q t``, so ``K' (R' X + t')`` projects
    every point where the crop camera, mapped back by ``A^-1``, does.

    Args:
        K: ``(3, 3)`` crop intrinsics (positive focal lengths).
        R: ``(3, 3)`` rotation, model to camera space.
        t: ``(3,)`` translation (mm).
        matrix: ``(3, 3)`` picture-to-crop similarity (or any affine map without reflection).

    Returns:
        ``K'``, ``R'``, ``t'`` of the picture.
    """
    projection = intrinsics_to_original(K, matrix)
    block = projection[:2, :2]
    if not np.linalg.det(block) > 0:
        raise InputError("the crop map and intrinsics must preserve orientation")
    # block = U Q2, U upper triangular: Q2's second row is block's second row normalised
    second = block[1] / np.linalg.norm(block[1])
    first = np.array([second[1], -second[0]])  # completes a proper rotation [[c, -s], [s, c]]
    turn = np.eye(3)
    turn[0, :2], turn[1, :2] = first, second
    intrinsics = projection @ turn.T
    intrinsics[1, 0] = 0.0  # exactly zero by construction
    return intrinsics, turn @ np.asarray(R, np.float64), turn @ np.asarray(t, np.float64)


def project_to_original(points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(N, 2)`` picture pixels of ``(N, 3)`` model points (mm) under a picture camera."""
    return project(np.asarray(points, np.float64), np.asarray(K, np.float64), np.asarray(R, np.float64),
                   np.asarray(t, np.float64))[0].numpy()


def outputs_to_original(outputs: dict[str, np.ndarray], matrix: np.ndarray) -> dict[str, np.ndarray]:
    """What the model returned for one crop, in the picture's pixels and camera.

    Args:
        outputs: numpy outputs of an exported model (:data:`tfface.export.OUTPUT_DOCS`) for
            one crop (no batch axis).
        matrix: ``(3, 3)`` picture-to-crop matrix ``A`` of the crop.

    Returns:
        ``landmarks68`` ``(68, 2)`` and ``landmarks5`` ``(5, 2)`` picture pixels, the picture
        camera ``K``, ``R``, ``t`` (:func:`camera_to_original`) and ``mesh2d`` ``(V, 2)``: the
        fitted vertices projected into the picture.
    """
    K, R, t = camera_to_original(outputs["K"], outputs["R"], outputs["t"], matrix)
    return {"landmarks68": to_original(outputs["landmarks68"], matrix),
            "landmarks5": to_original(outputs["landmarks5"], matrix),
            "K": K, "R": R, "t": t, "mesh2d": project_to_original(outputs["vertices"], K, R, t)}
