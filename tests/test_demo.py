"""The README's main job, ``tfface demo``, end to end on a fresh run folder (tiny config).

Reads photos, pretrains, trains with image summaries and periodic evaluation on annotated photos
and synthetic renders, and prints both final tables. An untrained network produces degenerate
fits early on; they must not end the run. The photos are made here (the research photos of
../shared/data are not needed).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from tfface.cli import main


def _photo_folders(root):
    """Eight face-like training photos and four annotated evaluation photos (.pts)."""
    rng = np.random.default_rng(0)
    train, annotated = root / "photos", root / "annotated"
    train.mkdir()
    annotated.mkdir()
    for index in range(8):
        image = rng.uniform(0, 255, (48, 48, 3)).astype(np.uint8)
        Image.fromarray(image).save(train / f"{index}.png")
    for index in range(4):
        Image.fromarray(rng.uniform(0, 255, (80, 80, 3)).astype(np.uint8)).save(annotated / f"{index}.png")
        points = rng.uniform(20, 60, (68, 2))
        (annotated / f"{index}.pts").write_text("\n".join(["version: 1", "n_points: 68", "{",
                                                             *(f"{x} {y}" for x, y in points), "}"]))
    return train, annotated


@pytest.mark.slow
def test_demo_runs_from_scratch_and_prints_the_tables(tmp_path, capsys):
    workdir = tmp_path / "run"
    train, annotated = _photo_folders(tmp_path)
    status = main(["demo", "--config", "tiny", "--workdir", str(workdir), "--minutes", "10",
                   "--pretrain-minutes", "0.5", "--evaluate-every", "2", "--steps", "6",
                   "--images", f"{train}:canonical", "--eval-photos", str(annotated)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "4 annotated photos" in printed and "mean shape in box / landmarks68" in printed
    assert "68-landmark NME, fitted" in printed and "held-out NME (%) against main-training steps" in printed
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["table"]) == {"pretrained", "trained"}
    assert set(results["photos"]) == {"mean shape in box", "pretrained", "trained"}
    for row in results["photos"].values():
        assert row["landmarks68"]["count"] + row["landmarks68"]["failed"] == 4
    assert [row["step"] for row in results["curve"]] == [2, 4, 6]
    assert all("photos/landmarks68/nme" in row and "nme68" in row for row in results["curve"])
    # Ground-truth maps through the fit (32 px, translation prior still strong after 6 steps): ~9%.
    assert "fit floor" in printed and results["fit_floor"]["count"] == 8 and results["fit_floor"]["nme68"] < 0.2
    for row in results["table"].values():
        assert row["count"] == 8
        # a mean is NaN only where every fit behind it failed (the failure rule of the tables)
        assert all(math.isfinite(value) or row.get(f"{key}_failed", row["failed"]) == row["count"]
                   for key, value in row.items())
    # the run's networks evaluate on the same photos from the command line, trained and pretrained
    for flags in ([], ["--pretrained"]):
        assert main(["evaluate", "--config", "tiny", "--workdir", str(workdir), "--eval-photos", str(annotated),
                     *flags]) == 0
        table = capsys.readouterr().out
        label = "pretrained" if flags else "trained"
        assert f"{label} / landmarks68 " in table and "mean shape in box / landmarks68 " in table


@pytest.mark.slow
def test_demo_on_synthetic_renders(tmp_path, capsys):
    workdir = tmp_path / "run"
    status = main(["demo", "--config", "tiny", "--workdir", str(workdir), "--minutes", "10", "--synthetic",
                   "--pretrain-minutes", "0.5", "--evaluate-every", "3", "--steps", "3"])
    assert status == 0
    results = json.loads((workdir / "results.json").read_text())
    assert results["photos"] == {} and set(results["table"]) == {"pretrained", "trained"}
    assert [row["step"] for row in results["curve"]] == [3]
