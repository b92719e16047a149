"""tools/placement_probe.py measures what a network follows of a moved crop window: a follower
scores the move, a network that places one canonical face scores nothing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tfface.data.framing import fit_similarity
from tfface.detection import crops, warp
from tfface.paths import REPO_ROOT

spec = importlib.util.spec_from_file_location("placement_probe", REPO_ROOT / "tools" / "placement_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

SIZE = 128


def scored(points_of) -> dict[str, np.ndarray]:
    """Per move, the parameters of the similarity between ``points_of(framing)`` of a crop and of
    its moved crop."""
    rng = np.random.default_rng(0)
    face = rng.uniform(150, 300, (68, 2))
    framing = crops.Framing(np.array([220.0, 230.0]), 180.0, 0.1)
    return {name: probe.similarity_parameters(fit_similarity(points_of(framing, face),
                                                             points_of(probe.moved(framing, *move), face)), SIZE)
            for name, move in probe.MOVES.items()}


def test_a_face_follower_scores_each_move():
    follower = scored(lambda framing, face: warp.apply(framing.matrix(SIZE), face))
    for name, (turn, zoom, right, down) in probe.MOVES.items():
        # the window turns one way, the face in the crop the other
        np.testing.assert_allclose(follower[name], [-turn, zoom, right, down], atol=1e-9, err_msg=name)


def test_a_canonical_face_scores_nothing():
    canonical = scored(lambda framing, face: np.linspace(30, 90, 136).reshape(68, 2))
    for name in probe.MOVES:
        np.testing.assert_allclose(canonical[name], [0, 1, 0, 0], atol=1e-9, err_msg=name)


def test_rows_report_the_median_of_each_move():
    results = {name: np.array([[-20.0, 1.25, 0.12, 0.12], [-10.0, 1.05, 0.02, 0.04], [0.0, 1.0, 0.0, 0.0]])
               for name in probe.MOVES}
    row = probe.format_rows("x", results).split()
    assert row[1:] == ["-10", "-10", "x1.05", "+0.02", "+0.04"]
