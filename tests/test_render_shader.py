"""Shading and compositing against closed-form answers."""

from __future__ import annotations

import numpy as np
import pytest

from tfface.errors import InputError
from tfface.geometry.sh import SH_CONSTANTS
from tfface.render.shader import render

FRONTAL = np.diag([1.0, -1.0, -1.0]).astype(np.float32)


def plane_scene(normal_tilt=0.0):
    """A square in the model plane z = 0 (normal +z), optionally tilted about y, 100 mm away."""
    square = np.array([[-30, -30, 0], [30, -30, 0], [30, 30, 0], [-30, 30, 0]], np.float64)
    c, s = np.cos(normal_tilt), np.sin(normal_tilt)
    square = square @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T
    triangles = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    K = np.array([[[40, 0, 16], [0, 40, 16], [0, 0, 1]]], np.float32)
    return square[None].astype(np.float32), triangles, K, FRONTAL[None], np.array([[0, 0, 100]], np.float32)


def test_lambertian_sh_shading_of_a_tilted_plane():
    tilt = 0.4
    vertices, triangles, K, R, t = plane_scene(tilt)
    albedo = np.tile(np.array([0.8, 0.5, 0.3], np.float32), (1, 4, 1))
    lighting = np.zeros((1, 9, 3), np.float32)
    lighting[0, 0] = [1.0, 0.9, 0.8]  # constant term
    lighting[0, 3] = [0.5, 0.0, -0.2]  # x term
    lighting[0, 2] = [0.3, 0.3, 0.3]  # z term
    background = np.full((1, 32, 32, 3), 0.25, np.float32)
    rendering = render(vertices, triangles, albedo, K, R, t, lighting, 32, 32, background)
    mask = rendering.fragments.mask.numpy()[0] > 0
    assert 100 < mask.sum() < 32 * 32
    normal_camera = FRONTAL @ np.array([np.sin(tilt), 0.0, np.cos(tilt)])
    c0, c1 = SH_CONSTANTS[:2]
    basis = np.zeros(9)
    basis[0], basis[1], basis[2], basis[3] = c0, c1 * normal_camera[1], c1 * normal_camera[2], c1 * normal_camera[0]
    expected = np.clip(albedo[0, 0] * (basis @ lighting[0]), 0, 1)
    image = rendering.image.numpy()[0]
    np.testing.assert_allclose(image[mask], np.broadcast_to(expected, image[mask].shape), atol=1e-5)
    np.testing.assert_allclose(image[~mask], 0.25)


def test_bad_lighting_shape_raises():
    vertices, triangles, K, R, t = plane_scene()
    with pytest.raises(InputError):
        render(vertices, triangles, np.ones((1, 4, 3), np.float32), K, R, t, np.ones((1, 9), np.float32), 8, 8)
