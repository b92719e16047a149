"""Accuracy of deterministic inference: random sampling + Cholesky (training) vs the exported set-up.

Evaluates one trained model twice on held-out synthetic data with ground truth
(``tfface data synth`` / training work folder): as trained (random confidence-ranked pixel
sampling of supplement C, Cholesky solves) and as exported (:func:`tfface.export.inference_model`:
fixed pixel lattice, Gauss-Jordan solves), and prints the evaluation table side by side
(:func:`tfface.training.evaluation.evaluate_batches`).

    python tools/compare_inference_sampling.py --weights WORK/train/final.weights.h5 \\
        --uv-model WORK/uv3dmm.npz --config small --data WORK/data [--num-samples 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tensorflow as tf

from tfface import export
from tfface.model import FaceModel
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.training import data
from tfface.training.config import load_config
from tfface.training.evaluation import evaluate_batches, format_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--uv-model", type=Path, required=True)
    parser.add_argument("--config", default="small")
    parser.add_argument("--data", type=Path, required=True, help="folder with the held-out TFRecords")
    parser.add_argument("--num-samples", type=int, default=None, help="lattice size (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args(argv)

    config = load_config(args.config)
    trained = FaceModel(str(args.uv_model), config)
    trained(tf.zeros([1, config.image_size, config.image_size, 3]))
    trained.load_weights(args.weights)
    deterministic = export.inference_model(trained, args.num_samples)
    uv_model = UVMorphableModel.load(args.uv_model)
    rows = {
        "random + Cholesky": evaluate_batches(trained, data.heldout_batches(args.data, args.batch_size), uv_model),
        "lattice + Gauss-Jordan": evaluate_batches(deterministic, data.heldout_batches(args.data, args.batch_size),
                                                   uv_model),
    }
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
