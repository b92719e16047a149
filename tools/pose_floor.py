"""What the mean face scores on the AFLW2000-3D dev photos when only its placement or its pose is right.

Rows of the evaluation table (box NME, yaw bins, io NME; ``landmarks68`` and
``landmarks68_original``). The first three place the model's mean face with the ground truth's
help:

* *in the box*: the mean face's frontal landmarks in the canonical crop (the baseline of
  ``tfface evaluate``; it localises nothing);
* *best 2D similarity*: its frontal landmarks moved by the similarity (turn, scale, shift) that
  fits each photo's landmarks best: a network that gets the face's placement right, and nothing
  else;
* *best 3D pose*: its 3D landmarks under the scaled orthographic camera (3D rotation, scale,
  shift) that fits each photo's landmarks best: a network that gets the head pose right, with the
  mean shape and no expression.

The last uses no ground truth (beyond picking which detected face is the annotated one, as
``tools/bench_detect_reconstruct.py`` does):

* *keypoint pose*: its 3D landmarks under the scaled orthographic camera that
  fits the detector's six keypoints on the whole photo (eye centres, nose tip, mouth centre and
  ear tragions, :func:`keypoint_points`) best: what a supervised detector's six points give
  about the head pose. Photos where no detection matches count as failed.

A network that beats a row knows more than that row assumes.

    python3 tools/pose_floor.py [--dev DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from scipy.optimize import least_squares  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from tfface.data.annotated import load_aflw2000_dev  # noqa: E402
from tfface.data.framing import fit_similarity, template_landmarks68  # noqa: E402
from tfface.detection.blazeface import FaceDetector  # noqa: E402
from tfface.detection.evaluation import load_dev_pictures, match  # noqa: E402
from tfface.morphable.loaders import load_default_model  # noqa: E402
from tfface.morphable.model import MorphableModel  # noqa: E402
from tfface.paths import shared_dir  # noqa: E402
from tfface.training.photo_evaluation import format_photo_table, mean_shape_in_box, summarise  # noqa: E402


def best_similarity(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(68, 2)`` ``points`` under the least-squares 2D similarity onto ``target``."""
    matrix = fit_similarity(points, target)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def keypoint_points(model: MorphableModel) -> np.ndarray:
    """``(6, 3)`` model-space points of BlazeFace's keypoints (``KEYPOINT_NAMES``' order) on the
    mean face: the eye centres (mean of each eye's six landmarks), the nose tip (landmark 30), the
    mouth centre (mean of landmarks 51 and 57) and the ear tragions (the vertices nearest
    ``(-+75, 18, 30)`` mm, the subject's right ear first: the model has no tragion landmark)."""
    mean, marks = model.mean.astype(np.float64), model.landmarks68
    tragions = [mean[np.argmin(np.linalg.norm(mean - [side * 75.0, 18.0, 30.0], axis=1))] for side in (-1, 1)]
    return np.stack([mean[marks[36:42]].mean(0), mean[marks[42:48]].mean(0), mean[marks[30]],
                     mean[marks[[51, 57]]].mean(0), *tragions])


def best_pose(points3d: np.ndarray, target: np.ndarray, shown: np.ndarray | None = None) -> np.ndarray:
    """Image of ``shown`` (default ``points3d``; ``(P, 3)`` model space, +y up) under the scaled
    orthographic camera (rotation, scale, image shift) that fits ``points3d``'s image to ``target``
    (image pixels, y down) in least squares.

    Starts from the affine camera's nearest scaled rotation and refines all 7 parameters with
    Levenberg-Marquardt; a local optimum, so the row is an upper bound of the true floor.
    """
    origin, axes = points3d.mean(0), np.array([1.0, -1.0, -1.0])  # image axes: y down, z away
    centred = (points3d - origin) * axes
    offset = target.mean(0)
    affine = np.linalg.lstsq(centred, target - offset, rcond=None)[0].T  # (2, 3)
    u, s, vt = np.linalg.svd(affine, full_matrices=False)
    rows = u @ vt
    rotation = np.vstack([rows, np.cross(rows[0], rows[1])])
    if np.linalg.det(rotation) < 0:
        rotation[2] *= -1

    def image(p: np.ndarray, points: np.ndarray) -> np.ndarray:
        turn = Rotation.from_rotvec(p[:3]).as_matrix()
        return p[3] * points @ turn[:2].T + offset + p[4:6]

    start = np.concatenate([Rotation.from_matrix(rotation).as_rotvec(), [s.mean(), 0.0, 0.0]])
    fitted = least_squares(lambda p: (image(p, centred) - target).ravel(), start, method="lm")
    return image(fitted.x, centred if shown is None else (shown - origin) * axes)


def posed_by_keypoints(model: MorphableModel, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The mean face posed by BlazeFace's keypoints on each whole dev picture.

    Args:
        model: the morphable model whose mean face is posed.
        folder: an AFLW2000-3D dev folder (``images/``, ``landmarks.npz``); its annotation only
            picks which detection is the annotated face (:func:`~tfface.detection.evaluation.match`).

    Returns:
        ``(N, 68, 2)`` picture-pixel landmarks, and ``(N,)`` flags of the pictures where no
        detection matches (their landmarks are zeros).
    """
    dev, detector = load_dev_pictures(folder), FaceDetector()
    points, landmarks = keypoint_points(model), model.mean[model.landmarks68].astype(np.float64)
    posed, failed = np.zeros((len(dev.pictures), 68, 2)), np.zeros(len(dev.pictures), bool)
    for i, (picture, truth) in enumerate(zip(dev.pictures, dev.annotations["landmarks68"])):
        detection = match(detector(picture), truth)
        failed[i] = detection is None
        if detection is not None:
            posed[i] = best_pose(points, np.asarray(detection.keypoints, np.float64), landmarks)
    return posed, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", help="AFLW2000-3D dev folder (default: <shared>/data/aflw2000-3d-dev)")
    args = parser.parse_args()
    folder = Path(args.dev) if args.dev else shared_dir() / "data" / "aflw2000-3d-dev"
    photos = load_aflw2000_dev(folder, 128)
    model = load_default_model()
    template = template_landmarks68(model)
    truth = photos.annotations["landmarks68"]
    frontal = photos.to_photo(np.broadcast_to(template.astype(np.float64) * 128, truth.shape))
    no_failure = np.zeros(len(photos), bool)
    posed, missed = posed_by_keypoints(model, folder)
    rows = {
        "mean face in the box": mean_shape_in_box(photos, template),
        "mean face, best 2D similarity": summarise(
            np.stack([best_similarity(f, t) for f, t in zip(frontal, truth)]), photos, no_failure),
        "mean face, best 3D pose": summarise(
            np.stack([best_pose(model.mean[model.landmarks68], t) for t in truth]), photos, no_failure),
        "mean face, keypoint pose": summarise(posed, photos, missed),
    }
    title = f"{len(photos)} photos; ground-truth rows fitted to landmarks68, every row scored against each annotation"
    print(format_photo_table(rows, title))


if __name__ == "__main__":
    main()
