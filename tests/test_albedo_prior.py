"""The albedo prior: skin with darker brows and redder lips, smooth decaying colour modes."""

from __future__ import annotations

import numpy as np

from tfface import albedo
from tfface.morphable.topology import cotangent_laplacian


def test_mean_is_skin_with_lips_and_brows(default_model):
    m = default_model
    colour = m.albedo_mean
    assert colour.shape == (m.num_vertices, 3) and colour.min() > 0 and colour.max() < 1
    lips, brows = albedo.region_weights(m.mean.astype(np.float64), m.landmarks68)
    # Inner-lip landmarks 61-63 and 65-67 lie inside the outer lip contour, mid-brow ones on the brows.
    inner_lips = m.landmarks68[[61, 62, 63, 65, 66, 67]]
    assert lips[inner_lips].min() > 0.9
    np.testing.assert_allclose(colour[m.landmarks68[[19, 24]]], np.tile(albedo.BROWS, (2, 1)), atol=0.02)
    # The nose tip and chin are plain skin.
    np.testing.assert_allclose(colour[m.landmarks68[[30, 8]]], np.tile(albedo.SKIN, (2, 1)), atol=0.01)
    redness = colour[:, 0] / colour[:, 1]
    assert redness[inner_lips].mean() > redness[m.landmarks68[30]] + 0.3


def test_modes_are_area_orthogonal_with_decaying_variance(default_model):
    m = default_model
    _, areas = cotangent_laplacian(m.mean, m.triangles)
    flat = m.albedo_basis.reshape(m.num_albedo, -1).astype(np.float64)
    gram = (flat * np.repeat(areas, 3)) @ flat.T / areas.sum()
    variance = np.diag(gram)
    assert m.num_albedo == albedo.NUM_MODES == 40
    np.testing.assert_allclose(gram - np.diag(variance), 0.0, atol=1e-6 * variance.max())
    assert np.all(np.diff(variance) <= 1e-9)
    # The strongest mode is the constant skin tone along the mean colour: same offset everywhere.
    first = m.albedo_basis[0]
    np.testing.assert_allclose(first, np.broadcast_to(first[0], first.shape), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(variance[0]), albedo.COLOUR_SIGMAS[0], rtol=1e-3)


def test_modes_are_smooth(default_model):
    m = default_model
    laplacian, areas = cotangent_laplacian(m.mean, m.triangles)
    basis = m.albedo_basis.astype(np.float64)
    energy = np.array([np.sum(b * (laplacian @ b)) for b in basis])
    norm = np.array([np.sum(areas[:, None] * b * b) for b in basis])
    rng = np.random.default_rng(0)
    noise = rng.normal(size=basis[0].shape)
    noise_ratio = np.sum(noise * (laplacian @ noise)) / np.sum(areas[:, None] * noise * noise)
    # Every mode's Dirichlet energy per unit squared norm is under 1 % of white noise's.
    assert np.all(energy / norm < 1e-2 * noise_ratio)


def test_three_standard_deviations_stay_in_range(default_model):
    m = default_model
    std = np.sqrt(np.sum(m.albedo_basis.astype(np.float64) ** 2, axis=0))  # (N, 3) per-vertex sd
    assert (m.albedo_mean - 3 * std).min() > 0.0 and (m.albedo_mean + 3 * std).max() < 1.0
    assert np.median(std[:, 0]) > 0.05  # and the prior does vary
