"""Box NME of detect-then-reconstruct on the whole AFLW2000-3D dev photos, beside the ground-truth-crop protocol.

Two ways to the same model's 68 landmarks on the same photos:

* *ground-truth crops* (the protocol of ``tfface evaluate --model``): each face cropped
  canonically from its annotated landmarks (:func:`tfface.data.annotated.load_aflw2000_dev`);
* *detect then reconstruct*: each whole 450 x 450 photo through BlazeFace
  (:class:`tfface.detection.blazeface.FaceDetector`), the annotated face's detection
  (:func:`tfface.detection.evaluation.match`) framed (:func:`tfface.detection.crops.detection_framing`),
  reconstructed, fitted again in the same crop turned upright by the first fit (by the model
  itself from version 18 on, else by a second crop of the photo,
  :func:`tfface.detection.pipeline.upright_pass`, as ``tfface reconstruct`` does) and mapped back
  to photo pixels (:mod:`tfface.detection.pipeline`). A face the detector misses counts as a
  failure, like an invalid fit: both are excluded from the means and counted in the ``failed``
  column.

With ``--single-pass`` there is no second crop of the photo (a model without its own upright pass
then fits each face once); with ``--no-keypoint-turn`` the detected crops
are not turned by the keypoints (box framing only); with ``--refine`` each detected face is
reconstructed a second time from the canonical crop of its first fit's landmarks instead
(:func:`tfface.detection.crops.landmark_framing`, the crop video tracking uses). Also prints the
latency per photo (p50, wall clock) of detection + crop + model + mapping.

    python tools/bench_detect_reconstruct.py [--model EXPORT] [--limit N] [--single-pass] [--refine]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from tfface.data.annotated import load_aflw2000_dev
from tfface.detection import crops
from tfface.detection.blazeface import FaceDetector
from tfface.detection.evaluation import load_dev_pictures, match
from tfface.detection.pipeline import reconstruct_framings, upright_pass
from tfface.export import ExportedModel
from tfface.io.records import head_pose_degrees
from tfface.paths import DEFAULT_MODEL, shared_dir
from tfface.runtime import use_pooled_cpu_allocator
from tfface.training.photo_evaluation import evaluate_photos, format_photo_table, summarise


def detect_then_reconstruct(runner, dev, unturned: bool,
                            second_pass: str | None) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """``(N, 68, 2)`` photo-pixel landmarks of each annotated face, failure flags ``(N,)`` and
    seconds per photo; ``second_pass`` is ``"upright"``, ``"refine"`` or None (module docstring)."""
    detector, template = FaceDetector(), crops.default_detection_template()
    predicted, failed, seconds = np.zeros((len(dev.pictures), 68, 2)), np.ones(len(dev.pictures), bool), []
    for i, (picture, points) in enumerate(zip(dev.pictures, dev.landmarks)):
        start = time.perf_counter()
        detection = match(detector(picture), points)
        if detection is not None:
            framing = crops.detection_framing(detection, template)
            if unturned:
                framing = crops.Framing(framing.centre, framing.side, 0.0, "box")
            face = reconstruct_framings(picture, [framing], runner, [detection])[0]
            if second_pass == "upright":
                face = upright_pass(picture, [face], runner)[0]
            elif second_pass == "refine" and face.fit_valid:
                roll = head_pose_degrees(face.picture["R"])["roll"]
                face = reconstruct_framings(picture, [crops.landmark_framing(face.picture["landmarks68"], roll)],
                                            runner, [detection])[0]
            predicted[i], failed[i] = face.picture["landmarks68"], not face.fit_valid
        seconds.append(time.perf_counter() - start)
    return predicted, failed, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="exported version folder (default: the shipped model, %(default)s)")
    parser.add_argument("--photos", type=Path, default=shared_dir() / "data" / "aflw2000-3d-dev",
                        help="an AFLW2000-3D dev folder (images/, landmarks.npz)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N photos")
    parser.add_argument("--no-keypoint-turn", action="store_true", help="do not turn detected crops by the keypoints")
    passes = parser.add_mutually_exclusive_group()
    passes.add_argument("--single-pass", action="store_true",
                        help="no second crop of the photo (the picture's upright pass; the model's own still runs)")
    passes.add_argument("--refine", action="store_true", help="second pass from the first fit's landmarks instead")
    args = parser.parse_args(argv)
    if not (args.photos / "landmarks.npz").is_file():
        parser.error(f"{args.photos} is not an AFLW2000-3D dev folder (set TFFACE_SHARED or pass --photos)")
    use_pooled_cpu_allocator()
    runner = ExportedModel(args.model)
    photos = load_aflw2000_dev(args.photos, runner.image_size, args.limit)
    dev = load_dev_pictures(args.photos, args.limit)
    second_pass = None if args.single_pass else "refine" if args.refine else "upright"
    label = "detect, unturned" if args.no_keypoint_turn else "detect"
    label += {None: ", one crop", "refine": ", refined", "upright": ""}[second_pass]
    predicted, failed, seconds = detect_then_reconstruct(runner, dev, args.no_keypoint_turn, second_pass)
    rows = {"ground-truth crops": evaluate_photos(runner, photos), f"{label} then reconstruct": summarise(predicted, photos, failed)}
    print(f"model {args.model}")
    print(format_photo_table(rows, f"{len(photos)} AFLW2000-3D dev photos"))
    print(f"\ndetect-then-reconstruct latency per photo (detector + crop + model + mapping, batch 1): "
          f"p50 {1000 * statistics.median(seconds):.0f} ms, p90 {1000 * np.percentile(seconds, 90):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
