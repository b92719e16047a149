"""Accuracy of the inference fit against the training fit, and of the export against both.

Evaluates one trained model on held-out synthetic data with ground truth
(:func:`tfface.training.evaluation.evaluate_batches`) four ways and prints the tables side by side:

* ``training``: random confidence-ranked samples of supplement C (``num_samples``), as in training;
* ``lattice``: the inference fit's weighted pixel lattice (``inference_samples``, every pixel by
  default), no robust re-solves;
* ``infer``: :meth:`FaceModel.infer`, the lattice plus ``robust_refits`` re-solves without the
  samples beyond ``tau_geometric``;
* ``export``: :func:`tfface.export.inference_model` (the same fit with Gauss-Jordan solves, no XLA).

    python3 tools/compare_inference_sampling.py --workdir RUN [--num-samples P] [--limit N]

(``RUN`` is a ``tfface train``/``demo`` folder: config.json, uv3dmm.npz, data/, train/final.weights.h5.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfface import export  # noqa: E402
from tfface.morphable.uv3dmm import UVMorphableModel  # noqa: E402
from tfface.training import data, loop  # noqa: E402
from tfface.training.config import load_config  # noqa: E402
from tfface.training.evaluation import evaluate_batches, format_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="run folder")
    parser.add_argument("--weights", type=Path, default=None, help="default: train/final.weights.h5")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="inference lattice size (default: the config's inference_samples)")
    parser.add_argument("--limit", type=int, default=None, help="held-out images (default: all)")
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args(argv)

    config = load_config(args.workdir / "config.json")
    if args.num_samples is not None:
        config = config.replace(inference_samples=args.num_samples)
    uv_path = args.workdir / "uv3dmm.npz"
    weights = args.weights or args.workdir / "train" / "final.weights.h5"

    def trained_model(variant):
        model = loop.build_model(uv_path, variant)
        model.load_weights(weights)
        return model

    trained, lattice = trained_model(config), trained_model(config.replace(robust_refits=0))
    uv_model = UVMorphableModel.load(uv_path)

    def evaluate(model, sampling="inference"):
        batches = data.heldout_batches(args.workdir / "data", args.batch_size, limit=args.limit)
        return evaluate_batches(model, batches, uv_model, sampling)

    rows = {
        "training": evaluate(trained, "training"),
        "lattice": evaluate(lattice),
        "infer": evaluate(trained),
        "export": evaluate(export.inference_model(trained)),
    }
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
