"""tools/tune.py: a keras-tuner random search whose trials are small real runs (tiny config)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tfface.training.config import CONFIGS
from tfface.training.data import prepare_synthetic_data

TOOL = Path(__file__).resolve().parents[1] / "tools" / "tune.py"


@pytest.mark.slow
def test_search_runs_trials_that_pretrain_train_and_score(default_uv_model, tmp_path):
    data_dir = prepare_synthetic_data(default_uv_model, CONFIGS["tiny"], tmp_path / "data")
    default_uv_model.save(tmp_path / "uv3dmm.npz")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"base": "tiny"}))
    out = tmp_path / "tune"
    result = subprocess.run([sys.executable, str(TOOL), "--data", str(data_dir), "--uv-model", str(tmp_path / "uv3dmm.npz"),
                             "--config", str(config), "--trials", "2", "--pretrain-steps", "2", "--steps", "2",
                             "--heldout", "8", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Results summary" in result.stdout
    trials = [json.loads(path.read_text()) for path in sorted((out / "tfface").glob("trial_*/trial.json"))]
    assert len(trials) == 2
    assert all(t["status"] == "COMPLETED" and math.isfinite(t["score"]) for t in trials)
    values = [t["hyperparameters"]["values"] for t in trials]
    assert values[0] != values[1]
    for t in trials:  # every trial is a real run: pretrained U-Net and trained weights on disk
        run = out / "tfface" / "runs" / t["trial_id"]
        assert (run / "pretrain" / "unet.weights.h5").exists() and (run / "train" / "final.weights.h5").exists()
        assert json.loads((run / "config.json").read_text())["tau_geometric"] == pytest.approx(
            t["hyperparameters"]["values"]["tau_geometric"])
