"""How far an exported model turns the head, and which of its maps holds the turn back.

Two measurements of the fitted head yaw (``tfface.io.records.head_pose_degrees`` of the fitted
camera rotation):

- **dev photos**: on AFLW2000-3D dev photos spread evenly over the 1,000 (canonical crops from
  their annotated landmarks), the fitted yaw against the annotated yaw: the spread of each, their
  correlation and the least-squares slope of fitted on annotated yaw (1 for a model that turns as
  far as the heads do, 0 for one that fits every face frontal).
- **profiled photos**: aligned CelebA photos turned by known yaws with the pretraining's face
  profiler (:class:`tfface.training.profiling.FaceProfiler`: landmark-box framing, relit), whose
  exact maps are known. The inference fit runs on the network's maps, on the exact maps, and on
  the network's maps with either the correspondence or the depth replaced by the exact one: the
  slope of each says how much of the turn the network's correspondence and its depth keep.

The annotated yaw of AFLW2000-3D has the opposite sign of ``head_pose_degrees``' yaw; the
profiler's yaw has the same sign.

    python3 tools/turn_probe.py --model savedmodel/tfface_ict/20 [--dev-photos 200] [--profiled 60]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.data.augment import SimilarityRange, augment_batch  # noqa: E402
from tfface.data.framing import template_landmarks5  # noqa: E402
from tfface.io.records import head_pose_degrees  # noqa: E402
from tfface.morphable.uv3dmm import UVMorphableModel  # noqa: E402
from tfface.paths import shared_dir  # noqa: E402
from tfface.training.evaluation import stack_maps  # noqa: E402
from tfface.training.profiling import FaceProfiler  # noqa: E402

#: Images per fit call.
BATCH = 20

#: Name -> which channels of the maps come from the exact maps: (correspondence, depth, confidence).
SWAPS = {
    "network maps": (False, False, False),
    "exact correspondence": (True, False, False),
    "exact depth": (False, True, False),
    "exact confidence": (False, False, True),
    "exact maps": (True, True, True),
}


def yaw_agreement(fitted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spread (degrees), correlation and least-squares slope of ``fitted`` on ``truth`` ``(N,)``
    (NaN with fewer than two values or no spread)."""
    fitted, truth = np.asarray(fitted, np.float64), np.asarray(truth, np.float64)
    if len(truth) < 2 or not truth.std() > 0:
        return dict.fromkeys(("fitted_sd", "truth_sd", "correlation", "slope"), float("nan"))
    return {"fitted_sd": float(fitted.std()), "truth_sd": float(truth.std()),
            "correlation": float(np.corrcoef(fitted, truth)[0, 1]), "slope": float(np.polyfit(truth, fitted, 1)[0])}


def profiled_examples(uv_model: UVMorphableModel, photos: np.ndarray,
                      yaw_degrees: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """Aligned photos turned as the pretraining turns them, with their exact maps.

    Args:
        uv_model: the UV-3DMM whose mean face turns.
        photos: ``(N, S, S, 3)`` aligned photos in [0, 1] (the pretraining's framing).
        yaw_degrees: ``(N,)`` yaw of each turn (pitch 0).

    Returns:
        ``images`` ``(N, S, S, 3)`` in [0, 1], quantised to 8 bits as a model input is, and the
        exact ``maps`` ``(N, S, S, 5)`` (u, v, depth, and the face region as both confidences).
    """
    size = photos.shape[1]
    profiler = FaceProfiler(uv_model, template_landmarks5(uv_model.model) * size, size, framing="landmark_box",
                            relight=True)
    yaw = tf.constant(np.radians(yaw_degrees), tf.float32)
    pitch = tf.zeros_like(yaw)
    turned, maps = profiler(photos, yaw, pitch)
    still = SimilarityRange(rotation=(0.0, 0.0), scale=(1.0, 1.0), translation=0.0)
    framed = augment_batch({"image": turned, "correspondence": maps[..., :2], "depth": maps[..., 2],
                            "confidence": maps[..., 3]}, tf.zeros([2], tf.int64), still, fill=False,
                           before=profiler.framing_transforms(yaw, pitch))
    images = tf.round(tf.clip_by_value(framed["image"], 0.0, 1.0) * 255.0) / 255.0
    return images, stack_maps(*(framed[key].numpy() for key in ("correspondence", "depth", "confidence")))


def swapped(network: tf.Tensor, exact: tf.Tensor, correspondence: bool, depth: bool, confidence: bool) -> tf.Tensor:
    """``(N, S, S, 5)`` maps taking each of correspondence, depth and confidence from ``exact``
    where asked, else from ``network``."""
    parts = [(exact if use else network)[..., channels]
             for use, channels in ((correspondence, slice(0, 2)), (depth, slice(2, 3)), (confidence, slice(3, 5)))]
    return tf.concat(parts, -1)


def fitted_yaw(model, images: tf.Tensor, maps: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` fitted yaw (degrees) of the inference fit of ``model`` (a
    :class:`~tfface.model.FaceModel`) to ``maps``, and ``(N,)`` whether the fit was well posed."""
    yaw, valid = [], []
    for start in range(0, int(images.shape[0]), BATCH):
        fit = model.fit_maps(images[start:start + BATCH], maps[start:start + BATCH], inference=True)
        yaw += [head_pose_degrees(rotation)["yaw"] for rotation in fit["R"].numpy()]
        valid.append(fit["well_posed"].numpy() > 0)
    return np.array(yaw), np.concatenate(valid)


def profiled_rows(model, uv_model: UVMorphableModel, photos: np.ndarray, max_yaw: float) -> dict[str, dict]:
    """Per :data:`SWAPS` entry, :func:`yaw_agreement` of the well-posed fits with the applied yaw
    (``photos`` turned evenly from ``-max_yaw`` to ``max_yaw``) and the median fitted |yaw| where
    the applied |yaw| is 60 degrees or more."""
    applied = np.linspace(-max_yaw, max_yaw, len(photos))
    images, exact = profiled_examples(uv_model, photos, applied)
    network = tf.concat([model.inference_maps(images[s:s + BATCH]) for s in range(0, len(photos), BATCH)], 0)
    rows = {}
    for name, swap in SWAPS.items():
        yaw, valid = fitted_yaw(model, images, swapped(network, exact, *swap))
        large = valid & (np.abs(applied) >= 60)
        rows[name] = {**yaw_agreement(yaw[valid], applied[valid]), "valid": int(valid.sum()),
                      "large_fitted": float(np.median(np.abs(yaw[large]))) if large.any() else float("nan"),
                      "large_applied": float(np.median(np.abs(applied[large]))) if large.any() else float("nan")}
    return rows


def dev_agreement(exported, photos) -> dict[str, float]:
    """:func:`yaw_agreement` of an exported model's valid fits with the annotated yaw of
    ``photos`` (:class:`~tfface.data.annotated.AnnotatedPhotos`), with ``valid``, their count.

    Args:
        exported: a :class:`tfface.export.ExportedModel` (or a callable like it).
        photos: canonical crops of annotated photos with their yaw.
    """
    outs = [exported(photos.images[s:s + BATCH]) for s in range(0, len(photos), BATCH)]
    yaw = -np.array([head_pose_degrees(r)["yaw"] for out in outs for r in out["R"]])  # the annotation's sign
    valid = np.concatenate([np.asarray(out["fit_valid"]).reshape(-1) for out in outs]).astype(bool)
    return {**yaw_agreement(yaw[valid], photos.yaw[valid]), "valid": int(valid.sum())}


def main() -> None:
    from tfface.data.annotated import load_aflw2000_dev
    from tfface.data.photos import PhotoSource, photo_dataset
    from tfface.export import ExportedModel
    from tfface.training.from_export import exported_network, exported_uv_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an exported model folder")
    parser.add_argument("--dev", help="AFLW2000-3D dev folder (default: <shared>/data/aflw2000-3d-dev)")
    parser.add_argument("--dev-photos", type=int, default=200, help="dev photos, spread evenly (0: none)")
    parser.add_argument("--celeba", help="aligned CelebA folder (default: <shared>/data/celeba)")
    parser.add_argument("--profiled", type=int, default=60, help="profiled CelebA photos (0: none)")
    parser.add_argument("--max-yaw", type=float, default=80.0, help="largest applied yaw, degrees")
    args = parser.parse_args()
    data = shared_dir() / "data"
    if args.dev_photos:
        exported = ExportedModel(args.model)
        photos = load_aflw2000_dev(Path(args.dev) if args.dev else data / "aflw2000-3d-dev", exported.image_size)
        spread = np.linspace(0, len(photos) - 1, args.dev_photos).round().astype(int)
        row = dev_agreement(exported, photos.subset(spread))
        print(f"{args.dev_photos} dev photos, {row['valid']} valid fits: fitted yaw sd {row['fitted_sd']:.1f} deg "
              f"(annotated {row['truth_sd']:.1f}), correlation {row['correlation']:.2f}, slope {row['slope']:.2f}")
    if args.profiled:
        uv_model = exported_uv_model(args.model)
        model = exported_network(args.model, uv_model)
        folder = args.celeba or data / "celeba"
        framed = photo_dataset([PhotoSource.parse(f"{folder}:celeba")], model.config.image_size,
                               template_landmarks5(uv_model.model), seed=7)
        photos = np.stack(list(framed.take(args.profiled).as_numpy_iterator()))
        print(f"{args.profiled} CelebA photos turned from {-args.max_yaw:.0f} to {args.max_yaw:.0f} deg (pitch 0); "
              "the inference fit on")
        for name, row in profiled_rows(model, uv_model, photos, args.max_yaw).items():
            print(f"  {name:<22} valid {row['valid']:>3}: slope {row['slope']:.2f}, correlation "
                  f"{row['correlation']:.2f}; median |yaw| {row['large_fitted']:.1f} where {row['large_applied']:.1f} "
                  "was applied (|applied| >= 60)")


if __name__ == "__main__":
    main()
