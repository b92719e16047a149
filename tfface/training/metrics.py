"""Evaluation metrics against synthetic or annotated ground truth (supplement J).

Pure NumPy functions on batches; :mod:`tfface.training.evaluation` runs the model and calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tfface.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import numpy.typing as npt

#: iBUG indices of the outer eye corners, the inter-ocular distance of 68-landmark NME.
OUTER_EYE_CORNERS_68 = (36, 45)
#: Eye centres of the 5-landmark convention (MAFL/AFLW in supplement J).
EYE_CENTRES_5 = (0, 1)
#: iBUG 68-landmark groups.
LANDMARK68_GROUPS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
                     "eyes": range(36, 48), "mouth": range(48, 68)}


def _landmark_pair(predicted, target) -> tuple[np.ndarray, np.ndarray]:
    predicted = np.asarray(predicted, np.float64)
    target = np.asarray(target, np.float64)
    if predicted.shape != target.shape or predicted.ndim != 3 or predicted.shape[-1] != 2:
        raise InputError(f"landmarks must both be (B, L, 2), got {predicted.shape} and {target.shape}")
    return predicted, target


def _interocular(target: np.ndarray, eyes: tuple[int, int]) -> np.ndarray:
    distance = np.linalg.norm(target[:, eyes[0]] - target[:, eyes[1]], axis=-1)
    if np.any(distance <= 0):
        raise InputError("inter-ocular distance is zero for some image")
    return distance


def normalised_mean_error(predicted: np.ndarray, target: np.ndarray, eyes: tuple[int, int]) -> np.ndarray:
    """Per-image NME: mean point-to-point error over the inter-ocular distance.

    Args:
        predicted, target: ``(B, L, 2)`` pixel positions.
        eyes: indices of the two points whose distance in ``target`` normalises the error.

    Returns:
        ``(B,)`` errors as fractions (multiply by 100 for percent).
    """
    predicted, target = _landmark_pair(predicted, target)
    return np.linalg.norm(predicted - target, axis=-1).mean(-1) / _interocular(target, eyes)


def landmark_group_bias(predicted: np.ndarray, target: np.ndarray,
                        groups: Mapping[str, Iterable[int]] = LANDMARK68_GROUPS) -> dict[str, np.ndarray]:
    """Mean signed error ``(2,)`` (x, y; +y is down) per landmark group, as a fraction of the
    inter-ocular distance (iBUG 36, 45) and averaged over images and the group's landmarks.

    A systematic error of the fit (all landmarks of a group displaced the same way) shows here,
    where the unsigned NME mixes it with the scatter.
    """
    predicted, target = _landmark_pair(predicted, target)
    relative = (predicted - target) / _interocular(target, OUTER_EYE_CORNERS_68)[:, None, None]
    return {name: relative[:, list(indices)].mean(axis=(0, 1)) for name, indices in groups.items()}


def landmark_spread_ratio(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image RMS distance of the predicted landmarks from their centroid over the target's:
    1 for a fit of the right size, above 1 for a fitted face too large in the image."""
    predicted, target = _landmark_pair(predicted, target)

    def spread(points: np.ndarray) -> np.ndarray:
        return np.sqrt(np.square(points - points.mean(1, keepdims=True)).sum(-1).mean(-1))

    return spread(predicted) / spread(target)


def nme68(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """68-landmark NME normalised by the outer eye corner distance (iBUG 36, 45)."""
    return normalised_mean_error(predicted, target, OUTER_EYE_CORNERS_68)


def nme5(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """5-landmark NME normalised by the eye-centre distance (as MAFL/AFLW, supplement J)."""
    return normalised_mean_error(predicted, target, EYE_CENTRES_5)


def summarise_errors(per_image_errors: np.ndarray) -> dict[str, float]:
    """Mean of per-image errors under the failure rule of every reported figure.

    The rule: an image whose error is not finite (NaN or inf) has failed; failures are excluded
    from the mean and reported beside it, as a count and as a share of all images. Callers mark
    an image whose fit failed (``fit_valid`` 0) with NaN, so a failure is never averaged as if
    it were an error, and an average is never taken over fewer images than it claims.

    Args:
        per_image_errors: ``(N,)`` errors (any unit), NaN or inf for a failed image.

    Returns:
        dict with ``mean`` (over the ``count - failed`` images that did not fail; NaN if none
        did), ``count`` (N), ``failed`` (images that failed) and ``failed_share``
        (``failed / count``; 0 for no image).
    """
    errors = np.asarray(per_image_errors, np.float64).reshape(-1)
    succeeded = np.isfinite(errors)
    count, failed = int(errors.size), int(errors.size - succeeded.sum())
    return {"mean": float(errors[succeeded].mean()) if succeeded.any() else float("nan"),
            "count": count, "failed": failed, "failed_share": failed / count if count else 0.0}


def failed_fits_as_nan(per_image_errors: np.ndarray, fit_valid: np.ndarray) -> np.ndarray:
    """``per_image_errors`` ``(N,)`` with NaN where ``fit_valid`` ``(N,)`` is 0: the failures of
    errors computed from a fit, as :func:`summarise_errors` counts them."""
    return np.where(np.asarray(fit_valid) > 0, np.asarray(per_image_errors, np.float64), np.nan)


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image mean of ``values`` ``(B, H, W)`` over ``mask`` ``(B, H, W)`` (NaN if empty)."""
    values, mask = np.asarray(values, np.float64), np.asarray(mask, np.float64)
    area = mask.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, (values * mask).sum(axis=(1, 2)) / area, np.nan)


def correspondence_error_uv(predicted: np.ndarray, target: npt.ArrayLike, mask: np.ndarray) -> np.ndarray:
    """Per-image mean UV distance between correspondence maps ``(B, H, W, 2)`` inside ``mask``."""
    return masked_mean(np.linalg.norm(np.asarray(predicted) - np.asarray(target), axis=-1), mask)


def scale_aligned_depth_error(predicted: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image mean |s d - Z| inside ``mask`` with the least-squares scale ``s`` per image.

    The network's depth is known up to the scale ``psi`` (DESIGN "Inverse camera"), so it is
    aligned to the ground truth ``Z`` (mm) by ``s = <d, Z> / <d, d>`` over the mask.
    """
    d = np.asarray(predicted, np.float64)
    z = np.asarray(target, np.float64)
    m = np.asarray(mask, np.float64)
    scale = (m * d * z).sum(axis=(1, 2)) / np.maximum((m * d * d).sum(axis=(1, 2)), 1e-30)
    return masked_mean(np.abs(scale[:, None, None] * d - z), m)


def shape_error(predicted_vertices: np.ndarray, target_vertices: np.ndarray) -> np.ndarray:
    """Per-image mean vertex distance (mm) of two ``(B, V, 3)`` model-space meshes.

    Both are in the 3DMM's canonical frame (the camera is separate), so no alignment is needed.
    """
    return np.linalg.norm(np.asarray(predicted_vertices, np.float64) - np.asarray(target_vertices, np.float64),
                          axis=-1).mean(-1)
