"""Evaluate a :class:`tfface.model.FaceModel` on held-out images with ground truth.

Synthetic ground truth (:mod:`tfface.data.synthetic`) gives every metric of
:mod:`tfface.training.metrics`; annotated real data (aflw2k3d) gives the landmark NMEs only.

Failures count explicitly, by one rule (:func:`tfface.training.metrics.summarise_errors`): an
image whose fit is not valid (``fit_valid`` 0: an ill-posed solve or an implausible camera) has
failed in the metrics computed from the fit (:data:`FITTED_METRICS`), and any image has failed in
a metric whose value is not finite. Every mean excludes its failures, which are reported beside
it: ``<metric>_failed`` per metric, and ``failed`` / ``failed_share`` for the fits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from tfface.errors import InputError
from tfface.morphable.model import landmarks5_from_68
from tfface.morphable.sampling import blend, locate
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.training import metrics

if TYPE_CHECKING:
    from tfface.model import FaceModel

#: Metrics computed from the fitted camera and mesh: a failed fit fails them.
FITTED_METRICS = ("nme68", "nme5", "shape_mm")

#: Rows of the evaluation table: key, label, unit/scale.
TABLE_ROWS = (
    ("nme68", "68-landmark NME, fitted (% inter-ocular)", 100.0),
    ("nme5", "5-landmark NME, fitted (% inter-ocular)", 100.0),
    ("direct_nme68", "68-landmark NME, direct (% inter-ocular)", 100.0),
    ("direct_nme5", "5-landmark NME, direct (% inter-ocular)", 100.0),
    ("correspondence_uv", "correspondence error (UV units x 100)", 100.0),
    ("correspondence_mm", "correspondence error (mm on the mean shape)", 1.0),
    ("depth_mm", "depth error after scale alignment (mm)", 1.0),
    ("shape_mm", "shape error (mm per vertex)", 1.0),
)


def mean_shape_at(uv_model: UVMorphableModel, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The UV-3DMM's mean shape ``(B, P, 3)`` mm at correspondences ``(B, P, 2)``, and validity.

    Only the mean is blended (sampling every basis at every pixel would take gigabytes).
    """
    tables = uv_model.tables()
    triangle, barycentrics, valid = locate(tf.constant(uv, tf.float32), tables, uv_model.resolution)
    ids = tf.gather(tables.triangles, triangle)
    return blend(tables.mean, ids, barycentrics).numpy(), valid.numpy().astype(np.float64)


def landmark_nmes(landmarks68: np.ndarray, landmarks5: np.ndarray,
                  target68: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image 68- and 5-landmark NMEs ``(B,)`` of predicted ``(B, 68, 2)`` and ``(B, 5, 2)``
    pixels against the ground-truth 68 landmarks (the 5 are derived from them)."""
    target68 = np.asarray(target68)
    return (metrics.nme68(np.asarray(landmarks68), target68),
            metrics.nme5(np.asarray(landmarks5), landmarks5_from_68(target68)))


#: Compiled outputs of each live model, by (sampling, use_xla): see :func:`compiled_outputs`.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_outputs(model: FaceModel, sampling: str = "inference") -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """``images -> outputs`` of a FaceModel as one ``tf.function`` per model, reused by every call.

    A new function per evaluation would trace the whole fit anew: about 2.5 s each time, against
    0.3-0.5 s for evaluating 4 images with the reused function (periodic evaluation in training).
    Python-side settings of the model other than ``use_xla`` are read once, at the first trace:
    build another model to evaluate another configuration.

    Args:
        model: a FaceModel (held weakly: the cache entry goes with the model).
        sampling: ``"inference"`` (:meth:`FaceModel.infer`) or ``"training"`` (the outputs of
            a fit on random samples, as in training).
    """
    if sampling not in ("inference", "training"):
        raise InputError(f"sampling must be 'inference' or 'training', got {sampling!r}")
    functions = _COMPILED.setdefault(model, {})
    key = (sampling, model.use_xla)
    if key not in functions:
        owner = weakref.ref(model)  # the function must not keep its own cache key alive
        run = ((lambda images: owner().infer(images)) if sampling == "inference" else
               (lambda images: owner().outputs_of(owner().fit_images(images))))
        functions[key] = tf.function(run, reduce_retracing=True)
    return functions[key]


def evaluate_batches(model: FaceModel, batches: Iterable[dict[str, tf.Tensor]],
                     uv_model: UVMorphableModel | None = None, sampling: str = "inference") -> dict[str, float]:
    """Mean metrics over batches of examples (dicts with ``image`` and ground-truth keys).

    Args:
        model: a FaceModel (run through :func:`compiled_outputs`).
        batches: iterable of dicts with at least ``image`` and ``landmarks68``; with
            ``correspondence``, ``depth``, ``mask`` (and ``shape_coefficients``,
            ``expression_coefficients`` for the shape error) the dense metrics are added.
        uv_model: the full UV-3DMM the ground truth was made with (for the mm metrics).
        sampling: ``"inference"`` (:meth:`FaceModel.infer`) or ``"training"`` (the same
            outputs of a fit on random samples, as in training).

    Returns:
        dict with, per metric, its mean over the images that did not fail in it (fractions for
        NME, UV units, mm) and ``<metric>_failed`` (the images excluded, see the module
        docstring); ``count`` (images), ``failed`` and ``failed_share`` (images whose fitted
        68-landmark NME failed: a fit that is not valid).
    """
    infer = compiled_outputs(model, sampling)
    values: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        out = {k: v.numpy() for k, v in infer(batch["image"]).items()}
        for name, errors in per_image_metrics(out, batch, uv_model).items():
            if name in FITTED_METRICS:
                errors = metrics.failed_fits_as_nan(errors, out["fit_valid"])
            values.setdefault(name, []).append(errors)
    return summarised(values)


def per_image_metrics(out: dict[str, np.ndarray], batch: dict, uv_model: UVMorphableModel | None
                      ) -> dict[str, np.ndarray]:
    """Every metric ``(B,)`` of a batch's inference outputs ``out`` against its ground truth (see
    :func:`evaluate_batches` for ``batch`` and ``uv_model``), failed fits not yet marked."""
    errors = {}
    target68 = batch["landmarks68"].numpy()
    for prefix in ("", "direct_"):  # fitted, then read off the correspondence map
        errors[f"{prefix}nme68"], errors[f"{prefix}nme5"] = landmark_nmes(
            out[f"{prefix}landmarks68"], out[f"{prefix}landmarks5"], target68)
    if "correspondence" not in batch:
        return errors
    mask = batch["mask"].numpy()
    errors["correspondence_uv"] = metrics.correspondence_error_uv(out["correspondence"], batch["correspondence"], mask)
    errors["depth_mm"] = metrics.scale_aligned_depth_error(out["depth"], batch["depth"].numpy(), mask)
    if uv_model is None:
        return errors
    b, h, w = mask.shape
    predicted_mean, predicted_valid = mean_shape_at(uv_model, out["correspondence"].reshape(b, h * w, 2))
    target_mean, _ = mean_shape_at(uv_model, batch["correspondence"].numpy().reshape(b, h * w, 2))
    both = mask * predicted_valid.reshape(b, h, w)
    distance = np.linalg.norm(predicted_mean - target_mean, axis=-1).reshape(b, h, w)
    errors["correspondence_mm"] = metrics.masked_mean(distance, both)
    if "shape_coefficients" in batch:
        truth = uv_model.model.vertices(batch["shape_coefficients"].numpy(), batch["expression_coefficients"].numpy())
        errors["shape_mm"] = metrics.shape_error(out["vertices"], truth)
    return errors


def summarised(values: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """The results of :func:`evaluate_batches` from per-image values ``{metric: [(B,) arrays]}``,
    failures marked NaN; ``count``, ``failed`` and ``failed_share`` are those of ``nme68``."""
    results = {}
    for name, parts in values.items():
        summary = metrics.summarise_errors(np.concatenate(parts))
        results[name] = summary["mean"]
        results[f"{name}_failed"] = summary["failed"]
        if name == "nme68":
            results.update(count=summary["count"], failed=summary["failed"], failed_share=summary["failed_share"])
    return results


#: Ground-truth depth (mm) enters the maps in metres: the order of the network's softplus depth.
#: The geometric solve is invariant to the depth's scale (it is absorbed by the inverse camera).
GROUND_TRUTH_DEPTH_UNIT = 1000.0


def stack_maps(correspondence: np.ndarray, depth: np.ndarray, geometric_confidence: np.ndarray,
               photometric_confidence: np.ndarray | None = None) -> tf.Tensor:
    """``(B, H, W, 5)`` network-layout maps from numpy parts ``(B, H, W, 2)``, ``(B, H, W)`` x 2-3.

    The photometric confidence defaults to the geometric one.
    """
    photometric_confidence = geometric_confidence if photometric_confidence is None else photometric_confidence
    return tf.constant(np.concatenate([correspondence, depth[..., None], geometric_confidence[..., None],
                                       photometric_confidence[..., None]], -1).astype(np.float32))


def filled_depth(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Ground-truth depth ``(B, H, W)`` mm in :data:`GROUND_TRUTH_DEPTH_UNIT`, the background filled
    with each image's largest face depth (a backdrop, like a network's output there)."""
    far = (depth * mask).reshape(len(depth), -1).max(-1)[:, None, None]
    return np.where(mask > 0, depth, far) / GROUND_TRUTH_DEPTH_UNIT


def ground_truth_maps(batch: dict) -> tf.Tensor:
    """The maps a perfect network would predict for a batch with ``correspondence``, ``depth``
    and ``mask``: exact correspondence and depth, confidence 1 on the face and 0 elsewhere."""
    mask = np.asarray(batch["mask"], np.float32)
    return stack_maps(np.asarray(batch["correspondence"]), filled_depth(np.asarray(batch["depth"]), mask), mask)


def fit_floor(model: FaceModel, batches: Iterable[dict[str, tf.Tensor]]) -> dict[str, float]:
    """Landmark NMEs of the inference fit fed ground-truth maps (:func:`ground_truth_maps`).

    The error a perfect U-Net would leave: what the sampling, the truncated 3DMM and the
    regularised geometric solve of ``model`` (in its current state) cost by themselves.

    Returns:
        dict with mean ``nme68``, ``nme5`` (fractions of the inter-ocular distance) over the
        images whose fit did not fail, ``nme68_failed``, ``nme5_failed``, ``count``, ``failed``
        and ``failed_share`` (the failure rule of :func:`evaluate_batches`).
    """
    fit = tf.function(lambda images, maps: model.outputs_of(model.inference_fit(images, maps)),
                      reduce_retracing=True)
    values: dict[str, list[np.ndarray]] = {"nme68": [], "nme5": []}
    for batch in batches:
        out = {k: v.numpy() for k, v in fit(batch["image"], ground_truth_maps(batch)).items()}
        for name, errors in zip(values, landmark_nmes(out["landmarks68"], out["landmarks5"], batch["landmarks68"])):
            values[name].append(metrics.failed_fits_as_nan(errors, out["fit_valid"]))
    return summarised(values)


#: Width of a table cell.
_CELL = 14

#: The failure rule, as the table states it under its rows.
FAILURE_RULE = ("means exclude failed images (a fit that is not valid, in the fitted rows; a non-finite error, "
                "in any row); (n) = images a mean excludes")


def _cell(result: dict[str, float], key: str, scale: float) -> str:
    """``mean (failed)`` of ``key`` in one run's results (``-`` if absent)."""
    if key not in result:
        return f"{'-':>{_CELL}}"
    failed = result.get(f"{key}_failed", 0)
    return f"{result[key] * scale:.3f}{f' ({failed})' if failed else ''}".rjust(_CELL)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A text table: one column per run (e.g. ``pretrained``, ``trained``), one row per metric.

    A cell is the metric's mean over the images that did not fail in it, followed by their count
    in brackets when some did (the rule of :func:`evaluate_batches`). Below the metrics: the
    images evaluated, the failed fits with their share, and the rule (:data:`FAILURE_RULE`).
    """
    names = list(rows)
    width = max(len(label) for _, label, _ in TABLE_ROWS)
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>{_CELL}}" for n in names)]
    for key, label, scale in TABLE_ROWS:
        if any(key in rows[n] for n in names):
            lines.append(f"{label:<{width}}  " + "  ".join(_cell(rows[n], key, scale) for n in names))
    if all("count" in rows[n] for n in names):
        lines.append(f"{'images':<{width}}  " + "  ".join(f"{rows[n]['count']:>{_CELL}d}" for n in names))
    if all("failed" in rows[n] for n in names):
        failed = [f"{rows[n]['failed']} ({100 * rows[n]['failed_share']:.1f}%)" for n in names]
        lines.append(f"{'failed fits':<{width}}  " + "  ".join(f"{cell:>{_CELL}}" for cell in failed))
        lines.append(FAILURE_RULE)
    return "\n".join(lines)
