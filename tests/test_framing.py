"""Canonical framing: the landmark crop, the mean face's template and per-collection similarities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfface.data.framing import (AFLW_CROPS, CANONICAL, CELEBA, FRAMING_SCALE, PhotoFraming, fit_similarity,
                                 landmark_crop, template_landmarks5, template_landmarks68)
from tfface.errors import InputError


def _similarity(angle: float, scale: float, shift) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]], [0, 0, 1.0]])


def test_fit_similarity_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, (5, 2))
    truth = _similarity(0.4, 1.7, (0.2, -0.3))
    moved = points @ truth[:2, :2].T + truth[:2, 2]
    np.testing.assert_allclose(fit_similarity(points, moved), truth, atol=1e-12)


def test_fit_similarity_rejects_degenerate_points():
    with pytest.raises(InputError):
        fit_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(InputError):
        fit_similarity(np.ones((5, 2)), np.zeros((4, 2)))


def test_landmark_crop_is_the_protocol_box():
    points = np.zeros((68, 2))
    points[:, 0] = np.linspace(10, 110, 68)  # box 100 wide
    points[:, 1] = np.linspace(50, 90, 68)  # 40 high
    x0, y0, side = landmark_crop(points)
    assert side == pytest.approx(FRAMING_SCALE * 100)
    assert (x0 + side / 2, y0 + side / 2) == pytest.approx((60, 70))
    with pytest.raises(InputError):
        landmark_crop(np.zeros((5, 2)))


def test_template_is_the_mean_face_framed_canonically(default_model):
    template = template_landmarks68(default_model)
    low, high = template.min(0), template.max(0)
    # the landmarks' box is centred and its longer side is 1 / FRAMING_SCALE of the crop
    np.testing.assert_allclose((low + high) / 2, [0.5, 0.5], atol=1e-6)
    assert (high - low).max() == pytest.approx(1 / FRAMING_SCALE, rel=1e-6)
    five = template_landmarks5(default_model)
    left_eye, right_eye, nose, mouth_left, mouth_right = five
    assert left_eye[0] < nose[0] < right_eye[0] and left_eye[1] < nose[1] < mouth_left[1]  # upright
    assert abs(left_eye[1] - right_eye[1]) < 0.01 and abs(mouth_left[1] - mouth_right[1]) < 0.01


def test_collection_framings_map_their_faces_onto_the_template(default_model):
    template = template_landmarks5(default_model)
    # a collection whose average landmarks are the template itself needs no change
    np.testing.assert_allclose(PhotoFraming("same", tuple(map(tuple, template))).to_canonical(template), np.eye(3),
                               atol=1e-6)
    # CelebA's average face lands within 3% of the crop of the template's landmarks (the nose: 2.4%)
    matrix = CELEBA.to_canonical(template)
    moved = np.array(CELEBA.landmarks5) @ matrix[:2, :2].T + matrix[:2, 2]
    assert np.abs(moved - template).max() < 0.03
    # a looser box zooms in about the centre, a canonical one not at all
    zoom = AFLW_CROPS.to_canonical(template)
    assert zoom[0, 0] == pytest.approx(AFLW_CROPS.box_scale / FRAMING_SCALE)
    np.testing.assert_allclose(zoom @ [0.5, 0.5, 1], [0.5, 0.5, 1])
    np.testing.assert_allclose(CANONICAL.to_canonical(template), np.eye(3))
