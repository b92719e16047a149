"""Landmark accuracy on real annotated photographs (the AFLW2000-3D protocol).

Every face is cropped canonically from its ground-truth landmarks
(:mod:`tfface.data.annotated`), the model's fitted 68 landmarks are mapped back to photo pixels
and compared with each annotation:

- box NME: mean point-to-point error over ``sqrt(w h)`` of the ground-truth landmarks' bounding
  box, overall and in the yaw bins [0, 30), [30, 60), [60, 90] degrees with the bins' mean
  (3DDFA, 3DDFA_V2, PRNet, SynergyNet);
- inter-ocular NME: over the outer-eye-corner distance (points 36 and 45).

Failures (a fit whose landmarks are not finite, or that the model flags invalid) are counted and
excluded from the means, which are reported with the count beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from typing import Any

import keras
import numpy as np

from tfface.data.annotated import AnnotatedPhotos
from tfface.training.evaluation import compiled_outputs
from tfface.training.metrics import OUTER_EYE_CORNERS_68, failed_fits_as_nan, summarise_errors

if TYPE_CHECKING:
    from tfface.model import FaceModel

#: Yaw bins of the protocol, degrees (absolute yaw; the last bin includes 90).
YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def box_nme(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image ``(N,)`` mean point error over ``sqrt(w h)`` of the target's bounding box.

    Args:
        predicted, target: ``(N, 68, 2)`` pixel positions.
    """
    predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    size = np.sqrt(np.prod(target.max(1) - target.min(1), axis=-1))
    return np.linalg.norm(predicted - target, axis=-1).mean(-1) / size


def interocular_nme(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image ``(N,)`` mean point error over the outer-eye-corner distance (NaN where it is 0)."""
    predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    left, right = OUTER_EYE_CORNERS_68
    distance = np.linalg.norm(target[:, left] - target[:, right], axis=-1)
    error = np.linalg.norm(predicted - target, axis=-1).mean(-1)
    return np.where(distance > 0, error / np.where(distance > 0, distance, 1.0), np.nan)


def summarise(predicted: np.ndarray, photos: AnnotatedPhotos, failed: np.ndarray) -> dict[str, dict[str, float]]:
    """The protocol's figures of photo-pixel predictions against every annotation.

    Args:
        predicted: ``(N, 68, 2)`` landmarks in photo pixels.
        photos: the annotated photos.
        failed: ``(N,)`` bool, fits that produced no face (excluded from every mean).

    Returns:
        annotation name -> dict with ``nme`` (all faces), ``nme_yaw_0_30`` ... (when yaw is
        known), ``nme_yaw_mean`` (mean of the bins), ``io_nme``, ``count`` and ``failed``;
        NMEs are fractions.
    """
    kept = ~np.asarray(failed, bool)
    tables = {}
    for name, target in photos.annotations.items():
        box = failed_fits_as_nan(box_nme(np.where(kept[:, None, None], predicted, 0.0), target), kept)
        summary = summarise_errors(box)
        row = {"nme": summary["mean"],
               "io_nme": float(np.nanmean(interocular_nme(predicted[kept], target[kept]))) if kept.any()
               else float("nan")}
        if photos.yaw is not None:
            yaw = np.abs(photos.yaw)
            bins = []
            for low, high in YAW_BINS:
                inside = (yaw >= low) & ((yaw < high) if high < 90 else (yaw <= 90))
                bins.append(summarise_errors(box[inside])["mean"] if inside.any() else float("nan"))
                row[f"nme_yaw_{low:.0f}_{high:.0f}"] = bins[-1]
            row["nme_yaw_mean"] = float(np.mean(bins))
        row["count"], row["failed"] = summary["count"] - summary["failed"], summary["failed"]
        tables[name] = row
    return tables


#: ``(B, S, S, 3)`` uint8 crops -> outputs with ``landmarks68`` (B, 68, 2) crop pixels and,
#: where the model reports it, ``fit_valid`` (B,): a Keras FaceModel (:func:`keras_runner`) or an
#: exported model (:class:`tfface.export.ExportedModel`).
Runner = Callable[[np.ndarray], Mapping[str, Any]]


def keras_runner(model: FaceModel) -> Runner:
    """A FaceModel's inference (:func:`tfface.training.evaluation.compiled_outputs`) on uint8 crops.

    The runner holds ``model`` (the compiled function, cached per model, holds it only weakly),
    so it works after the caller drops its own reference.
    """
    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = compiled_outputs(model)(np.asarray(images, np.float32) / 255.0)
        return {k: v.numpy() for k, v in outputs.items()}

    return run


def predict_landmarks(run: Runner, photos: AnnotatedPhotos, batch_size: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Fitted 68 landmarks of every crop, in photo pixels, and the failure flags ``(N,)``.

    A fit fails when its landmarks are not finite or, where the model reports it, when the fit
    is not valid (``fit_valid``).
    """
    points, failed = [], []
    for start in range(0, len(photos), batch_size):
        index = slice(start, start + batch_size)
        out = run(photos.images[index])
        landmarks = np.asarray(out["landmarks68"], np.float64)
        bad = ~np.isfinite(landmarks).all(axis=(1, 2))
        if "fit_valid" in out:
            bad |= ~np.asarray(out["fit_valid"]).astype(bool).reshape(-1)
        points.append(photos.to_photo(np.nan_to_num(landmarks), index))
        failed.append(bad)
    return np.concatenate(points), np.concatenate(failed)


def evaluate_photos(model: FaceModel | Runner, photos: AnnotatedPhotos,
                    batch_size: int = 25) -> dict[str, dict[str, float]]:
    """:func:`summarise` of the fitted landmarks of a FaceModel or a :data:`Runner` on annotated photos."""
    run = model if not isinstance(model, keras.Model) else keras_runner(model)
    predicted, failed = predict_landmarks(run, photos, batch_size)
    return summarise(predicted, photos, failed)


def mean_shape_in_box(photos: AnnotatedPhotos, template68: np.ndarray) -> dict[str, dict[str, float]]:
    """The baseline that localises nothing: the mean face's landmarks placed in each crop
    (:func:`tfface.data.framing.template_landmarks68`, unit positions)."""
    size = photos.images.shape[1]
    points = np.broadcast_to(np.asarray(template68, np.float64) * size, (len(photos), 68, 2))
    return summarise(photos.to_photo(points), photos, np.zeros(len(photos), bool))


#: Columns of :func:`format_photo_table`: key, heading.
COLUMNS = (("nme", "all"), ("nme_yaw_0_30", "[0,30)"), ("nme_yaw_30_60", "[30,60)"),
           ("nme_yaw_60_90", "[60,90]"), ("nme_yaw_mean", "bins mean"), ("io_nme", "io NME"))


def format_photo_table(rows: dict[str, dict[str, dict[str, float]]], title: str = "real photos") -> str:
    """A text table: one line per (system, annotation), box NME in % by yaw bin, io NME, and the
    count of faces and failures (failures are excluded from the means)."""
    header = f"{'':44s}" + "".join(f"{heading:>10s}" for _, heading in COLUMNS) + f"{'faces':>8s}{'failed':>8s}"
    lines = [f"{title}: 68-landmark NME (%) / sqrt(w h) of the ground-truth box, by |yaw|; "
             "io NME over outer eye corners; failed fits excluded from the means", header]
    for system, tables in rows.items():
        for annotation, row in tables.items():
            cells = "".join(f"{100 * row[key]:10.2f}" if key in row else f"{'-':>10s}" for key, _ in COLUMNS)
            lines.append(f"{(system + ' / ' + annotation)[:44]:44s}{cells}{row['count']:8d}{row['failed']:8d}")
    return "\n".join(lines)
