"""Hyperparameter search with keras-tuner over U-Net width/depth and the loss thresholds.

Each trial is a small real run of the method: a :class:`tfface.model.FaceModel` with the sampled
hyperparameters (supplement N: width multiplier, two or four convolutions per scale; DESIGN
"Training": the thresholds ``tau_geometric`` and ``tau_photometric``) is pretrained (supplement F;
the architecture changes between trials, so every trial pretrains its own U-Net), trained without
supervision, and scored by the held-out fitted 68-landmark NME with every failed fit scored at
:data:`FAILED_FIT_NME` (ground truth read for scoring only): the evaluation tables exclude
failures and count them, but a trial whose fits mostly fail must not rank by its few successes. Trials run through :mod:`tfface.training.loop`, so each keeps its checkpoints and
TensorBoard logs under ``--out/tfface/runs/<trial>`` and a killed search resumes. keras-tuner
imports tensorboard, which requirements.txt pins.

    python3 tools/tune.py --data runs/small/data --uv-model runs/small/uv3dmm.npz \
        --trials 8 --pretrain-steps 1000 --steps 500 --out runs/tune
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_tuner  # noqa: E402

from tfface.training import data, loop  # noqa: E402
from tfface.training.config import load_config  # noqa: E402
from tfface.training.evaluation import evaluate_batches  # noqa: E402
from tfface.morphable.uv3dmm import UVMorphableModel  # noqa: E402


class FaceTuner(keras_tuner.RandomSearch):
    """Random search whose trials pretrain, train with ``model.fit`` and score by held-out NME.

    Args:
        uv_path: UV-3DMM file.
        base_config: configuration the sampled hyperparameters are applied to.
        data_dir: data folder of :mod:`tfface.training.data`.
        pretrain_steps, steps: pretraining and main-training steps of every trial.
        heldout_limit: held-out images scored per trial.
        **kwargs: :class:`keras_tuner.RandomSearch` arguments.
    """

    def __init__(self, uv_path, base_config, data_dir, pretrain_steps: int, steps: int, heldout_limit: int = 100,
                 **kwargs):
        super().__init__(**kwargs)
        self.uv_path = Path(uv_path)
        self.uv_model = UVMorphableModel.load(uv_path)
        self.base_config = base_config
        self.data_dir = Path(data_dir)
        self.pretrain_steps = int(pretrain_steps)
        self.steps = int(steps)
        self.heldout_limit = int(heldout_limit)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        config = self.base_config.replace(
            width=hp.Choice("width", [0.125, 0.25, 0.5]),
            variant=hp.Choice("variant", ["regular", "deep"]),
            tau_geometric=hp.Float("tau_geometric", 3.0, 30.0, sampling="log"),
            tau_photometric=hp.Float("tau_photometric", 0.05, 0.4, sampling="log"),
            pretrain_steps=self.pretrain_steps, steps=self.steps,
            checkpoint_every=min(self.base_config.checkpoint_every, self.steps),
        )
        workdir = Path(self.project_dir) / "runs" / trial.trial_id
        loop.save_config(config, workdir)
        model = loop.build_model(self.uv_path, config)
        loop.pretrain(model, config, self.data_dir, workdir)
        loop.train(model, config, self.data_dir, workdir)
        scores = evaluate_batches(model, data.heldout_batches(self.data_dir, 25, limit=self.heldout_limit),
                                  self.uv_model)
        return {"nme68": nme_with_failures(scores["nme68"], scores["count"], scores.get("nme68_failed", 0)),
                "direct_nme68": scores["direct_nme68"]}


#: NME (fraction of the inter-ocular distance) a failed fit scores in the search's objective.
FAILED_FIT_NME = 1.0


def nme_with_failures(mean: float, count: int, failed: int) -> float:
    """The mean NME over all ``count`` images when the ``failed`` ones score :data:`FAILED_FIT_NME`
    and the others average ``mean`` (``mean`` is NaN when all failed, and unused)."""
    succeeded = count - failed
    total = (mean * succeeded if succeeded else 0.0) + FAILED_FIT_NME * failed
    return total / count if count else FAILED_FIT_NME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data folder of `tfface train` (TFRecords)")
    parser.add_argument("--uv-model", required=True, help="UV-3DMM file")
    parser.add_argument("--config", default="small")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="pretraining steps per trial")
    parser.add_argument("--steps", type=int, default=500, help="main-training steps per trial")
    parser.add_argument("--heldout", type=int, default=100, help="held-out images scored per trial")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search")
    parser.add_argument("--out", default="runs/tune")
    args = parser.parse_args()
    tuner = FaceTuner(args.uv_model, load_config(args.config), args.data, args.pretrain_steps, args.steps,
                      heldout_limit=args.heldout, objective=keras_tuner.Objective("nme68", direction="min"),
                      max_trials=args.trials, seed=args.seed, directory=args.out, project_name="tfface",
                      overwrite=False)
    tuner.search()
    tuner.results_summary(num_trials=args.trials)


if __name__ == "__main__":
    main()
