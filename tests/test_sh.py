"""Spherical harmonics basis, SH fitting and the inverse-SH lighting model (supplement D)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfface.errors import InputError
from tfface.paths import REPO_ROOT
from tfface.geometry.sh import (
    SH_CONSTANTS,
    fit_inverse_sh,
    fit_sh,
    inverse_lighting_errors,
    random_sh_lighting,
    sample_sphere,
    sh_basis,
)


def sphere_quadrature():
    """Nodes (N, 3) and weights (N,) integrating polynomials of degree <= 9 on the sphere exactly."""
    z, wz = np.polynomial.legendre.leggauss(6)
    phi = np.arange(12) * 2 * np.pi / 12
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz**2)
    nodes = np.stack([r * np.cos(pp), r * np.sin(pp), zz], -1).reshape(-1, 3)
    weights = np.repeat(wz * 2 * np.pi / 12, 12)
    return nodes, weights


def test_basis_is_orthonormal_on_the_sphere():
    nodes, weights = sphere_quadrature()
    np.testing.assert_allclose(weights.sum(), 4 * np.pi)
    Y = sh_basis(nodes).numpy()
    np.testing.assert_allclose(Y.T @ (weights[:, None] * Y), np.eye(9), atol=1e-12)


def test_basis_values_and_order():
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    assert math.isclose(c0, 0.282095, rel_tol=1e-5) and math.isclose(c2, 1.092548, rel_tol=1e-6)
    s = 1 / np.sqrt(2)
    normals = np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0], [s, s, 0]])
    expected = np.array(
        [
            [c0, 0, c1, 0, 0, 0, 2 * c3, 0, 0],
            [c0, 0, 0, c1, 0, 0, -c3, 0, c4],
            [c0, c1, 0, 0, 0, 0, -c3, 0, -c4],
            [c0, c1 * s, 0, c1 * s, c2 / 2, 0, -c3, 0, 0],
        ]
    )
    np.testing.assert_allclose(sh_basis(normals).numpy(), expected, atol=1e-15)
    assert sh_basis(tf.zeros((2, 5, 3), tf.float32)).shape == (2, 5, 9)


def test_basis_rejects_wrong_shape():
    with pytest.raises(InputError, match=r"\(\.\.\., 3\)"):
        sh_basis(np.zeros((4, 2)))


def test_basis_gradient_matches_finite_differences():
    normals = sample_sphere(5, seed=1).numpy()
    theoretical, numerical = tf.test.compute_gradient(sh_basis, [normals])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-8)


def test_sample_sphere_is_unit_and_uniform():
    points = sample_sphere(20_000, seed=3).numpy()
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1, rtol=1e-12)
    # Uniform: mean ~ 0, second moment ~ I / 3 (std errors ~ 0.004 and 0.002).
    assert np.abs(points.mean(axis=0)).max() < 0.02
    np.testing.assert_allclose(points.T @ points / len(points), np.eye(3) / 3, atol=0.01)
    np.testing.assert_array_equal(points, sample_sphere(20_000, seed=3).numpy())


def test_fit_sh_is_exact_in_the_span():
    directions = sample_sphere(500, seed=4)
    coefficients = np.random.default_rng(4).normal(size=(2, 3, 9))
    values = np.einsum("nk,bck->bcn", sh_basis(directions).numpy(), coefficients)
    np.testing.assert_allclose(fit_sh(directions, values).numpy(), coefficients, rtol=1e-10, atol=1e-12)


def test_fit_inverse_sh_is_exact_for_constant_lighting():
    lighting = np.zeros((2, 9))
    lighting[:, 0] = np.array([0.9, 2.0]) / SH_CONSTANTS[0]
    inverse = fit_inverse_sh(lighting, num_points=2000).numpy()
    expected = np.zeros((2, 9))
    expected[:, 0] = 1 / (np.array([0.9, 2.0]) * SH_CONSTANTS[0])
    np.testing.assert_allclose(inverse, expected, atol=1e-12)


def test_fit_inverse_sh_reduces_to_a_least_squares_fit_of_the_reciprocal():
    lighting = random_sh_lighting((3,), seed=5, dtype=tf.float64)
    directions = sample_sphere(3000, seed=9)
    reciprocal = 1 / tf.einsum("lk,nk->ln", lighting, sh_basis(directions))
    np.testing.assert_allclose(
        fit_inverse_sh(lighting, num_points=3000, seed=9).numpy(), fit_sh(directions, reciprocal).numpy(), rtol=1e-12
    )


def test_random_lighting_statistics():
    lighting = random_sh_lighting((4000,), seed=6, dtype=tf.float64).numpy()
    centred = lighting - np.eye(9)[0] * 0.9 / SH_CONSTANTS[0]
    np.testing.assert_allclose(centred.std(axis=0), 0.2, rtol=0.05)
    assert np.abs(centred.mean(axis=0)).max() < 0.02
    np.testing.assert_array_equal(lighting, random_sh_lighting((4000,), seed=6, dtype=tf.float64).numpy())
    assert random_sh_lighting().shape == (9,) and random_sh_lighting().dtype == tf.float32
    # A (2,) seed of any integer dtype equals the int seed (s, 0).
    np.testing.assert_array_equal(random_sh_lighting(seed=tf.constant([6, 0], tf.int32)), random_sh_lighting(seed=6))


def test_inverse_lighting_errors_in_the_papers_range():
    """Supplement D / Fig. 11: max 0.049-0.272, RMS 0.019-0.058 over four lightings.

    Over 12 random lightings the median errors must fall inside the paper's ranges and no
    lighting may be far worse than its worst one.
    """
    lighting = random_sh_lighting((12,), seed=0, dtype=tf.float64)
    inverse = fit_inverse_sh(lighting, num_points=100_000, seed=0)
    max_error, rms_error = (e.numpy() for e in inverse_lighting_errors(lighting, inverse, sample_sphere(100_000, 0)))
    assert 0.049 <= np.median(max_error) <= 0.272
    assert 0.019 <= np.median(rms_error) <= 0.058
    assert max_error.max() < 0.6 and rms_error.max() < 0.12
    # The inverse model is better than ignoring the lighting's variation (shading 0.9 everywhere).
    shading = tf.einsum("lk,nk->ln", lighting, sh_basis(sample_sphere(100_000, 0))).numpy()
    assert np.all(rms_error < np.sqrt(((shading - 0.9) ** 2).mean(axis=1)))


def test_inverse_lighting_errors_known_values():
    lighting = np.eye(9)[:1] / SH_CONSTANTS[0]  # shading 1 everywhere
    inverse = np.eye(9)[:1] / (2 * SH_CONSTANTS[0])  # 1 / g = 2 everywhere
    max_error, rms_error = inverse_lighting_errors(lighting, inverse, sample_sphere(10, 0))
    np.testing.assert_allclose([max_error.numpy()[0], rms_error.numpy()[0]], [1.0, 1.0])
    max_error, _ = inverse_lighting_errors(lighting, -inverse, sample_sphere(10, 0))
    assert np.isinf(max_error.numpy()[0])


def test_fit_inverse_sh_rejects_dark_lighting_eagerly_and_stays_finite_in_graph():
    lighting = np.eye(9)[[0, 2]] * 3.0  # second lighting: shading 3 c1 z, negative below
    with pytest.raises(InputError, match="positive"):
        fit_inverse_sh(lighting, num_points=1000)
    with pytest.raises(InputError):
        fit_inverse_sh(np.full((9,), np.nan), num_points=1000)
    result = tf.function(lambda l: fit_inverse_sh(l, num_points=1000))(tf.constant(lighting))
    assert np.all(np.isfinite(result.numpy()))


def test_validation_tool_prints_table_and_writes_preview(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("inverse_sh_validation", REPO_ROOT / "tools" / "inverse_sh_validation.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    preview = tmp_path / "spheres.png"
    assert tool.main(["--lightings", "3", "--points", "5000", "--preview", str(preview)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:4]]
    assert [row[0] for row in rows] == ["0", "1", "2"]
    assert all(0 < float(row[2]) <= float(row[1]) < 1 for row in rows)  # 0 < RMS <= max
    assert lines[4].split()[0] == "range"
    with Image.open(preview) as image:
        assert image.size == (3 * 128, 2 * 128) and image.mode == "RGB"
