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


def test_the_window_move_is_what_a_follower_scores():
    for name, (turn, zoom, right, down) in probe.MOVES.items():
        np.testing.assert_allclose(probe.similarity_parameters(probe.window_move((turn, zoom, right, down), SIZE), SIZE),
                                   [-turn, zoom, right, down], atol=1e-9, err_msg=name)


def dot_follower(images: np.ndarray) -> dict[str, np.ndarray]:
    """A "network" that follows what it sees: ``(N, 3, 2)`` centroids of the red, green and blue dots."""
    points = []
    for image in np.asarray(images, np.float64):
        ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
        weights = [np.clip(image[..., c] - image[..., [k for k in range(3) if k != c]].max(-1), 0, None)
                   for c in range(3)]
        points.append([[(w * xs).sum() / w.sum() + 0.5, (w * ys).sum() / w.sum() + 0.5] for w in weights])
    return {"landmarks68": np.array(points)}


def test_a_follower_on_a_training_collection_scores_each_move(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(probe, "BATCH", 2)  # the 3 crops go to the network in two calls
    for index in range(3):
        photo = np.full((SIZE, SIZE, 3), 90 + 20 * index, np.uint8)
        for channel, (x, y) in enumerate([(50, 52), (80, 56), (62, 84)]):
            photo[y - 3:y + 4, x - 3:x + 4] = 0
            photo[y - 3:y + 4, x - 3:x + 4, channel] = 255
        Image.fromarray(photo).save(tmp_path / f"{index}.png")
    crops_of = probe.collection_crops(f"{tmp_path}:canonical", 3, SIZE)
    assert crops_of(None).shape == (3, SIZE, SIZE, 3) and crops_of(None).dtype == np.uint8  # as photo crops
    results = probe.followed(dot_follower, crops_of, SIZE, "landmarks68")
    for name, (turn, zoom, right, down) in probe.MOVES.items():
        assert results[name].shape == (3, 4)
        error = np.abs(np.median(results[name], axis=0) - [-turn, zoom, right, down])
        assert (error <= [0.5, 0.01, 0.005, 0.005]).all(), (name, error)  # degrees, factor, sides
