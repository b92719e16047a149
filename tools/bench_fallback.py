"""Latency of the fixed-camera fallback: two exports side by side on the dev crops.

The inference fit falls back on a fixed natural camera where the free camera is implausible
(:meth:`tfface.model.FaceModel.inference_fit`, ``inference_fallback_focal``). This times an
export without the fallback (``--old``) and one with it (``--new``, default the shipped model)
at batch 1, alternating between them crop by crop so that a shared machine slows both alike, on
two sets of AFLW2000-3D dev crops (the ground-truth-crop protocol of ``tfface evaluate``):
crops whose fit by ``--new`` keeps its free camera, and crops whose fit falls back (found among
the first ``--limit`` crops). Prints p50 wall-clock milliseconds per crop and their ratio.

    python tools/bench_fallback.py --old OLD_EXPORT [--new EXPORT] [--limit 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tfface.data.annotated import load_aflw2000_dev
from tfface.export import ExportedModel
from tfface.paths import DEFAULT_MODEL, shared_dir


def p50_milliseconds(models: list[ExportedModel], images: np.ndarray, repeats: int) -> list[float]:
    """Median wall-clock milliseconds per crop of each model, the models alternating crop by crop."""
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for image in images:
            for model, spent in zip(models, times):
                start = time.perf_counter()
                model(image[None])
                spent.append(time.perf_counter() - start)
    return [1000.0 * float(np.median(spent)) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="an export without the fallback (a version folder)")
    parser.add_argument("--new", default=str(DEFAULT_MODEL), help="an export with it (default: the shipped model)")
    parser.add_argument("--limit", type=int, default=1000, help="dev crops searched for fallback fits")
    parser.add_argument("--repeats", type=int, default=3, help="passes over each set")
    args = parser.parse_args()
    old, new = ExportedModel(args.old), ExportedModel(args.new)
    photos = load_aflw2000_dev(shared_dir() / "data" / "aflw2000-3d-dev", new.image_size, limit=args.limit)
    fixed = np.concatenate([new(photos.images[start:start + 25])["camera_fixed"]
                            for start in range(0, len(photos), 25)]) > 0
    free = np.flatnonzero(~fixed)
    sets = {"free camera": photos.images[free[np.linspace(0, len(free) - 1, 24).round().astype(int)]],
            "fallback": photos.images[fixed]}
    print(f"{args.old} (old) against {args.new} (new); {fixed.sum()} of {len(photos)} crops fall back")
    for name, images in sets.items():
        if not len(images):
            print(f"{name:12s} no crop")
            continue
        before, after = p50_milliseconds([old, new], images, args.repeats)
        print(f"{name:12s} {len(images):3d} crops, p50 ms per crop: {before:.0f} (old) {after:.0f} (new), "
              f"ratio {after / before:.2f}")


if __name__ == "__main__":
    main()
