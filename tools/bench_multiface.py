"""Multi-face pictures: 2-4 AFLW2000-3D dev photos tiled over clutter; every face found, with its own landmarks.

Each scene (:func:`tfface.detection.evaluation.tiled_scene`) shrinks 2, 3 or 4 consecutive dev
photos (450 x 450, whole) to 50-80% of a 400-pixel grid cell and pastes them over random
rectangles, ellipses and noise into an 800 x 800 picture; ``tfface``'s whole-picture path
(:func:`tfface.detection.pipeline.reconstruct_picture`) runs on it. Per annotated face: found or
not (:func:`tfface.detection.evaluation.match`), and its box NME in the scene beside the box NME
of the same face when its photo is reconstructed alone (the single-face bound). Also counts the
detections that match no annotated face (the dev photos' unannotated people, or false ones).

    python tools/bench_multiface.py [--model EXPORT] [--scenes 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tfface.detection import warp
from tfface.detection.blazeface import FaceDetector
from tfface.detection.evaluation import load_dev_pictures, match, tiled_scene
from tfface.detection.pipeline import reconstruct_picture
from tfface.export import ExportedModel
from tfface.paths import DEFAULT_MODEL, shared_dir
from tfface.runtime import use_pooled_cpu_allocator
from tfface.training.photo_evaluation import box_nme


def face_nme(faces, points: np.ndarray) -> float | None:
    """Box NME of the validly fitted face whose detection finds the face annotated by ``points``, else None."""
    found = match([face.detection for face in faces], points)
    face = next((f for f in faces if found is not None and f.detection is found), None)
    if face is None or not face.fit_valid:
        return None
    return float(box_nme(face.picture["landmarks68"][None], points[None])[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="exported version folder (default: the shipped model, %(default)s)")
    parser.add_argument("--photos", type=Path, default=shared_dir() / "data" / "aflw2000-3d-dev")
    parser.add_argument("--scenes", type=int, default=30, help="number of tiled scenes (faces 2, 3, 4 in turn)")
    args = parser.parse_args(argv)
    use_pooled_cpu_allocator()
    runner, detector = ExportedModel(args.model), FaceDetector()
    counts = [2 + i % 3 for i in range(args.scenes)]
    dev = load_dev_pictures(args.photos, sum(counts))
    found, tiled, single, unmatched, start = 0, [], [], 0, 0
    for seed, count in enumerate(counts):
        indices = list(range(start, start + count))
        start += count
        canvas, matrices = tiled_scene([dev.pictures[i] for i in indices], seed)
        faces = reconstruct_picture(canvas, detector, runner)
        matched = 0
        for i, matrix in zip(indices, matrices):
            truth = warp.apply(matrix, dev.landmarks[i])
            matched += match([face.detection for face in faces], truth) is not None
            in_scene = face_nme(faces, truth)
            alone = face_nme(reconstruct_picture(dev.pictures[i], detector, runner), dev.landmarks[i])
            if in_scene is not None and alone is not None:
                tiled.append(in_scene)
                single.append(alone)
        found += matched
        unmatched += len(faces) - matched
    tiled, single = np.array(tiled), np.array(single)
    print(f"model {args.model}; {args.scenes} scenes of 2-4 dev photos over clutter (800x800): "
          f"{found} of {sum(counts)} faces found, {unmatched} other detections")
    print(f"box NME of the {len(tiled)} faces fitted both ways (%): in the scenes {100 * tiled.mean():.2f} "
          f"(median {100 * np.median(tiled):.2f}), each photo alone {100 * single.mean():.2f} "
          f"(median {100 * np.median(single):.2f}); faces worse in the scene than alone by more than 1 point: "
          f"{int((tiled > single + 0.01).sum())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
