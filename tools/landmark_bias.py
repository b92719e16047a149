"""Systematic landmark errors of a trained run: per-group signed bias and the fitted face's size.

Runs a trained FaceModel on held-out synthetic faces and prints, besides the fitted 68-landmark
NME, the mean signed error of each landmark group (jaw, brows, nose, eyes, mouth) in percent of
the inter-ocular distance, the ratio of the fitted landmarks' spread to the true one (above 1: the
fitted face is too large in the image) and the NME after rescaling each image's fitted landmarks
about their centroid by that ratio (what the size error costs).

Usage::

    python3 tools/landmark_bias.py --workdir runs/small [--weights FILE] [--limit 200]

(``--workdir`` is a ``tfface train``/``demo`` run folder: ``config.json``, ``uv3dmm.npz``,
``data/`` and, unless ``--weights`` is given, ``train/final.weights.h5``.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.training import data, loop, metrics  # noqa: E402
from tfface.training.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="run folder (config.json, uv3dmm.npz, data/)")
    parser.add_argument("--weights", type=Path, default=None, help="weights (default: train/final.weights.h5)")
    parser.add_argument("--limit", type=int, default=None, help="held-out images (default: all)")
    args = parser.parse_args()
    model = loop.load_trained(args.workdir / "uv3dmm.npz", load_config(args.workdir / "config.json"), args.workdir,
                              args.weights)
    infer = tf.function(model.infer)
    predicted, target = [], []
    for batch in data.heldout_batches(args.workdir / "data", 25, limit=args.limit):
        predicted.append(infer(batch["image"])["landmarks68"].numpy())
        target.append(batch["landmarks68"].numpy())
    predicted, target = np.concatenate(predicted), np.concatenate(target)
    ratio = metrics.landmark_spread_ratio(predicted, target)
    centre = predicted.mean(1, keepdims=True)
    rescaled = centre + (predicted - centre) / ratio[:, None, None]
    print(f"fitted 68-landmark NME {100 * metrics.nme68(predicted, target).mean():.2f}% over {len(target)} images")
    print(f"fitted/true landmark spread: mean {ratio.mean():.4f}, median {np.median(ratio):.4f}; "
          f"NME with the spread rescaled to the truth {100 * metrics.nme68(rescaled, target).mean():.2f}%")
    print("mean signed error (% inter-ocular, +y down):")
    for name, (x, y) in metrics.landmark_group_bias(predicted, target).items():
        print(f"  {name:<6} x {100 * x:+.2f}  y {100 * y:+.2f}")


if __name__ == "__main__":
    main()
