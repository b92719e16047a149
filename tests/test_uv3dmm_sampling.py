"""Sampling the UV-3DMM: exact at vertices and inside triangles, differentiable in (u, v)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError, ModelFileError
from tfface.morphable.tutte import signed_areas
from tfface.morphable.uv3dmm import UVMorphableModel


def vertex_rows(uv_model):
    """Per-vertex rows of every sampled quantity, float64: mean, basis, albedo_mean, albedo_basis."""
    m = uv_model.model
    basis = np.concatenate([m.shape_basis, m.expression_basis]).transpose(1, 2, 0)
    return {"mean": m.mean, "basis": basis, "albedo_mean": m.albedo_mean,
            "albedo_basis": m.albedo_basis.transpose(1, 2, 0)}


def assert_matches_rows(sample, expected: dict, rtol: float):
    for name, want in expected.items():
        got = getattr(sample, name).numpy()[0]
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=name)


def test_sampling_at_each_vertex_returns_its_rows(default_uv_model):
    uv = default_uv_model.vertex_uv[None]
    sample = default_uv_model.sample(uv)
    assert np.all(sample.valid.numpy() == 1.0)
    assert_matches_rows(sample, vertex_rows(default_uv_model), rtol=1e-5)


def random_inner_points(uv_model, count, seed, margin=0.0):
    """Points at random barycentrics (each >= margin) in random triangles of the mesh."""
    rng = np.random.default_rng(seed)
    tri = rng.integers(0, len(uv_model.model.triangles), count)
    bary = margin + (1 - 3 * margin) * rng.dirichlet(np.ones(3), count)
    ids = uv_model.model.triangles[tri]
    uv = np.einsum("pj,pjd->pd", bary, uv_model.vertex_uv[ids].astype(np.float64)).astype(np.float32)
    # Barycentrics of the float32 point itself, in float64.
    p = uv_model.vertex_uv[ids].astype(np.float64)
    m = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]], -1)
    b12 = np.linalg.solve(m, (uv - p[:, 0])[..., None])[..., 0]
    return uv, ids, np.column_stack([1 - b12.sum(1), b12])


def test_inside_a_triangle_the_sample_is_the_barycentric_blend(default_uv_model):
    uv, ids, bary = random_inner_points(default_uv_model, 4000, seed=1)
    sample = default_uv_model.sample(uv[None])
    rows = vertex_rows(default_uv_model)
    expected = {k: np.einsum("pj,pj...->p...", bary, v[ids].astype(np.float64)) for k, v in rows.items()}
    assert_matches_rows(sample, expected, rtol=1e-5)
    clear = bary.min(axis=1) > 1e-3  # well inside: the located triangle is this one
    np.testing.assert_array_equal(np.sort(sample.vertex_ids.numpy()[0][clear], 1), np.sort(ids[clear], 1))


def test_near_edges_and_texel_borders_stays_exact(default_uv_model):
    uv_model = default_uv_model
    s = uv_model.resolution
    # Points a hair inside triangle edges (one barycentric 1e-5) and on texel grid lines.
    ids = uv_model.model.triangles[np.random.default_rng(2).integers(0, len(uv_model.model.triangles), 2000)]
    bary = np.random.default_rng(3).dirichlet(np.ones(3), 2000)
    bary[:, 0] = 1e-5
    bary /= bary.sum(1, keepdims=True)
    near_edge = np.einsum("pj,pjd->pd", bary, uv_model.vertex_uv[ids].astype(np.float64)).astype(np.float32)
    grid = np.random.default_rng(4).uniform(0, 1, (2000, 2))
    grid[:1000, 0] = np.round(grid[:1000, 0] * s) / s
    grid[1000:, 1] = np.round(grid[1000:, 1] * s) / s
    points = np.concatenate([near_edge, grid.astype(np.float32)])
    sample = uv_model.sample(points[None])
    assert np.all(sample.valid.numpy() == 1.0)
    # Whatever triangle was found, it contains the point: the barycentrics rebuild it.
    b = sample.barycentrics.numpy()[0].astype(np.float64)
    rebuilt = np.einsum("pj,pjd->pd", b, uv_model.vertex_uv[sample.vertex_ids.numpy()[0]].astype(np.float64))
    np.testing.assert_allclose(rebuilt, points, atol=2e-7)
    assert b.min() > -1e-4
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-5)


def test_around_the_hole_vertices_stays_exact(default_uv_model):
    # The auxiliary vertices (valence 42-74, located by angle) sit in the most crowded texels.
    uv_model = default_uv_model
    centres = uv_model.vertex_uv[uv_model.num_original_vertices:].astype(np.float64)
    rng = np.random.default_rng(8)
    radius = 10.0 ** rng.uniform(-6, -2, (len(centres), 3000))
    angle = rng.uniform(0, 2 * np.pi, radius.shape)
    points = (centres[:, None] + radius[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)).reshape(-1, 2)
    points = np.concatenate([points, centres]).astype(np.float32)
    sample = uv_model.sample(points[None])
    assert np.all(sample.valid.numpy() == 1.0)
    ids, b = sample.vertex_ids.numpy()[0], sample.barycentrics.numpy()[0].astype(np.float64)
    rebuilt = np.einsum("pj,pjd->pd", b, uv_model.vertex_uv[ids].astype(np.float64))
    np.testing.assert_allclose(rebuilt, points, atol=2e-7)
    assert b.min() > -1e-4
    mean = np.einsum("pj,pjd->pd", b, uv_model.model.mean[ids].astype(np.float64))
    np.testing.assert_allclose(sample.mean.numpy()[0], mean, atol=1e-5 * np.abs(mean).max())


def test_outside_the_square_is_invalid_and_zero(toy_uv_model):
    uv = np.array([[[-0.1, 0.5], [0.5, 1.2], [2.0, -3.0], [np.nan, 0.5], [0.5, np.inf], [0.25, 0.75]]], np.float32)
    sample = toy_uv_model.sample(uv)
    np.testing.assert_array_equal(sample.valid.numpy(), [[0, 0, 0, 0, 0, 1]])
    for field in ("mean", "basis", "albedo_mean", "albedo_basis", "barycentrics"):
        values = getattr(sample, field).numpy()
        assert np.all(np.isfinite(values))
        assert np.all(values[0, :5] == 0.0), field
    assert sample.vertex_ids.dtype == tf.int32 and sample.barycentrics.dtype == tf.float32


def test_the_closed_square_is_valid(toy_uv_model):
    uv = np.array([[[0, 0], [1, 1], [1, 0], [0, 1], [1, 0.37], [0.61, 1], [0, 0.5], [0.5, 0]]], np.float32)
    sample = toy_uv_model.sample(uv)
    np.testing.assert_array_equal(sample.valid.numpy(), 1.0)
    b = sample.barycentrics.numpy()[0].astype(np.float64)
    rebuilt = np.einsum("pj,pjd->pd", b, toy_uv_model.vertex_uv[sample.vertex_ids.numpy()[0]].astype(np.float64))
    np.testing.assert_allclose(rebuilt, uv[0], atol=1e-7)


def test_shapes_and_batch_independence(toy_uv_model):
    uv = np.random.default_rng(5).uniform(0, 1, (3, 7, 2)).astype(np.float32)
    both = toy_uv_model.sample(uv)
    m = toy_uv_model.model
    assert both.mean.shape == (3, 7, 3)
    assert both.basis.shape == (3, 7, 3, m.num_shape + m.num_expression)
    assert both.albedo_basis.shape == (3, 7, 3, m.num_albedo)
    assert both.vertex_ids.shape == both.barycentrics.shape == (3, 7, 3) and both.valid.shape == (3, 7)
    one = toy_uv_model.sample(uv[1:2])
    np.testing.assert_array_equal(one.basis.numpy()[0], both.basis.numpy()[1])


def test_gradient_wrt_uv_matches_finite_differences(default_uv_model):
    uv_model = default_uv_model
    # Points well inside large triangles, so a finite-difference step stays in the triangle.
    areas = -signed_areas(uv_model.vertex_uv, uv_model.model.triangles)
    big = np.flatnonzero(areas > np.quantile(areas, 0.9))
    rng = np.random.default_rng(6)
    tri = rng.choice(big, 16, replace=False)
    bary = 0.2 + 0.4 * rng.dirichlet(np.ones(3), 16)
    uv = np.einsum("pj,pjd->pd", bary, uv_model.vertex_uv[uv_model.model.triangles[tri]])[None].astype(np.float32)
    weights = [tf.constant(rng.normal(size=s), tf.float32) for s in
               [(1, 16, 3), (1, 16, 3, 153), (1, 16, 3), (1, 16, 3, 40)]]

    def per_point(x):
        """``(16,)`` weighted sum of every output at each point (a point's term depends on it alone)."""
        s = uv_model.sample(x)
        outputs = (s.mean, s.basis, s.albedo_mean, s.albedo_basis)
        return tf.add_n([tf.reduce_sum(tf.reshape(w * v, [16, -1]), axis=1) for w, v in zip(weights, outputs)])

    x = tf.Variable(uv)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(per_point(x))
    grad = tape.gradient(value, x).numpy()
    h = 2e-4
    numeric = np.zeros_like(uv)
    for d in range(2):
        step = np.zeros_like(uv)
        step[0, :, d] = h
        numeric[0, :, d] = (per_point(uv + step).numpy() - per_point(uv - step).numpy()) / (2 * h)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1.0
    np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=2e-2 * np.abs(numeric).max())


def test_gradient_is_zero_and_finite_outside(toy_uv_model):
    x = tf.Variable([[[1.5, 0.5], [0.5, 0.5]]], dtype=tf.float32)
    with tf.GradientTape() as tape:
        s = toy_uv_model.sample(x)
        value = tf.reduce_sum(s.mean) + tf.reduce_sum(s.basis)
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad[0, 0] == 0) and np.any(grad[0, 1] != 0)


def test_save_load_round_trip(tmp_path, toy_uv_model):
    toy_uv_model.save(tmp_path / "uv.npz")
    again = UVMorphableModel.load(tmp_path / "uv.npz")
    assert again.resolution == toy_uv_model.resolution
    assert again.num_original_vertices == toy_uv_model.num_original_vertices
    np.testing.assert_array_equal(again.vertex_uv, toy_uv_model.vertex_uv)
    uv = np.random.default_rng(7).uniform(0, 1, (1, 50, 2)).astype(np.float32)
    a, b = toy_uv_model.sample(uv), again.sample(uv)
    for field in a._fields:
        np.testing.assert_array_equal(getattr(a, field).numpy(), getattr(b, field).numpy())


def test_bad_uv3dmm_files(tmp_path, toy_uv_model):
    toy_uv_model.save(tmp_path / "uv.npz")
    data = (tmp_path / "uv.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError):
        UVMorphableModel.load(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError):
        UVMorphableModel.load(tmp_path / "junk.npz")
    arrays = dict(np.load(tmp_path / "uv.npz"))
    del arrays["vertex_uv"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ModelFileError, match="vertex_uv"):
        UVMorphableModel.load(tmp_path / "missing.npz")
    arrays = dict(np.load(tmp_path / "uv.npz"))
    arrays["locator_candidates"] = arrays["locator_candidates"] + 10**6
    np.savez(tmp_path / "range.npz", **arrays)
    with pytest.raises(ModelFileError, match="out of range"):
        UVMorphableModel.load(tmp_path / "range.npz")


@pytest.mark.parametrize("uv", [np.zeros((5, 2), np.float32), np.zeros((1, 5, 3), np.float32),
                                np.zeros((1, 5, 2), np.int32)])
def test_bad_uv_input_is_an_input_error(toy_uv_model, uv):
    with pytest.raises(InputError):
        toy_uv_model.sample(uv)
