"""Hyperparameter search with keras-tuner over U-Net width/depth and the loss thresholds.

Each trial builds a :class:`tfface.model.FaceModel` with the sampled hyperparameters (supplement
N: width multiplier, two or four convolutions per scale; DESIGN "Training": the thresholds
``tau_geometric`` and ``tau_photometric``), trains it without supervision for a few steps on the
synthetic training images of a data folder and scores it by the held-out direct 68-landmark
NME (ground truth read for scoring only). Results go to ``--out`` (keras-tuner's project folder;
needs tensorboard installed, as keras-tuner imports it).

    python tools/tune.py --data runs/small/data --trials 8 --steps 200 --out runs/tune
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402

from tfface.model import FaceModel  # noqa: E402
from tfface.morphable.uv3dmm import UVMorphableModel  # noqa: E402
from tfface.training import data  # noqa: E402
from tfface.training.config import load_config  # noqa: E402
from tfface.training.evaluation import evaluate_batches  # noqa: E402


class FaceTuner(keras_tuner.RandomSearch):
    """Random search whose trials train with ``model.fit`` and score by held-out NME."""

    def __init__(self, uv_model, base_config, data_dir, steps: int, **kwargs):
        super().__init__(**kwargs)
        self.uv_model = uv_model
        self.base_config = base_config
        self.data_dir = data_dir
        self.steps = steps

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        config = self.base_config.replace(
            width=hp.Choice("width", [0.125, 0.25, 0.5]),
            variant=hp.Choice("variant", ["regular", "deep"]),
            tau_geometric=hp.Float("tau_geometric", 3.0, 30.0, sampling="log"),
            tau_photometric=hp.Float("tau_photometric", 0.05, 0.4, sampling="log"),
        )
        model = FaceModel(self.uv_model, config)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        model.build_for_training()
        images = data.training_images(self.data_dir).batch(config.batch_size)
        model.fit(images, steps_per_epoch=self.steps, epochs=1, verbose=0)
        scores = evaluate_batches(model, data.heldout_batches(self.data_dir, 25, limit=100))
        return {"direct_nme68": scores["direct_nme68"], "nme68": scores["nme68"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data folder of `tfface train` (TFRecords)")
    parser.add_argument("--uv-model", required=True, help="UV-3DMM file")
    parser.add_argument("--config", default="small")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200, help="training steps per trial")
    parser.add_argument("--out", default="runs/tune")
    args = parser.parse_args()
    tuner = FaceTuner(UVMorphableModel.load(args.uv_model), load_config(args.config), args.data, args.steps,
                      objective=keras_tuner.Objective("direct_nme68", direction="min"),
                      max_trials=args.trials, directory=args.out, project_name="tfface", overwrite=False)
    tuner.search()
    tuner.results_summary(num_trials=args.trials)


if __name__ == "__main__":
    main()
