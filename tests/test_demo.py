"""The README's main job, ``tfface demo``, end to end on a fresh run folder (tiny config).

Builds the UV-3DMM, synthesises data, pretrains, trains with image summaries and periodic
held-out evaluation, and prints the final table. An untrained network produces degenerate fits
early on; they must not end the run.
"""

from __future__ import annotations

import json
import math

import pytest

from tfface.cli import main


@pytest.mark.slow
def test_demo_runs_from_scratch_and_prints_the_table(tmp_path, capsys):
    workdir = tmp_path / "run"
    status = main(["demo", "--config", "tiny", "--workdir", str(workdir), "--minutes", "10",
                   "--pretrain-minutes", "0.5", "--evaluate-every", "2", "--steps", "6"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "68-landmark NME, fitted" in printed and "held-out NME (%) against main-training steps" in printed
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["table"]) == {"pretrained", "trained"}
    assert [row["step"] for row in results["curve"]] == [2, 4, 6]
    # Ground-truth maps through the fit (32 px, translation prior still strong after 6 steps): ~9%.
    assert "fit floor" in printed and results["fit_floor"]["count"] == 8 and results["fit_floor"]["nme68"] < 0.2
    for row in results["table"].values():
        assert row["count"] == 8
        assert all(math.isfinite(value) for value in row.values())
