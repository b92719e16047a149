"""The albedo learnt from photos: unwrapping under known shading, weighted EM PCA with missing
vertices, the prior fallback, the range guard, its file, and a run on real photos."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from conftest import grid_mesh, shared_or_skip, toy_model
from tfface import albedo, albedo_learning as al
from tfface.errors import ModelFileError
from tfface.geometry.sh import SH_CONSTANTS
from tfface.layers.photometric import inverse_shading


def _lighting(rng, batch):
    """``(B, 3, 9)`` inverse-SH coefficients near unit inverse shading (positive on the sphere)."""
    neutral = np.zeros((batch, 3, 9))
    neutral[..., 0] = 1.0 / SH_CONSTANTS[0]
    return (neutral + 0.05 * rng.normal(size=neutral.shape)).astype(np.float32)


def _unit(rng, shape):
    n = rng.normal(size=shape)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def _photos_of(true_albedo, vertex_ids, barycentrics, rng):
    """Sample colours that ``true_albedo`` ``(B, V, 3)`` gives under random normals and lighting:
    pixel albedo is the barycentric blend of the vertices', colour = albedo / inverse shading."""
    batch, points = vertex_ids.shape[:2]
    normals, lighting = _unit(rng, (batch, points, 3)), _lighting(rng, batch)
    pixel_albedo = np.einsum("bpk,bpkc->bpc", barycentrics, np.take_along_axis(
        true_albedo[:, :, None, :], vertex_ids[..., None].astype(np.int64), axis=1))
    colours = pixel_albedo / inverse_shading(tf.constant(normals), tf.constant(lighting)).numpy()
    return colours.astype(np.float32), normals, lighting


def test_unwrap_with_true_shading_recovers_vertex_albedo_where_covered():
    rng = np.random.default_rng(0)
    points, triangles = grid_mesh(8)
    v = len(points)
    batch = 2
    true_albedo = rng.uniform(0.2, 0.9, size=(batch, v, 3)).astype(np.float32)
    # Photo b sees the first 20 + 10 b triangles: each at its three corners (samples on vertices,
    # where splatting is exact), and the whole batch also has invalid samples (barycentrics 0).
    ids, bary, weight = [], [], []
    for b in range(batch):
        seen = triangles[:20 + 10 * b]
        corners = np.repeat(seen, 3, axis=0)
        one_hot = np.tile(np.eye(3), (len(seen), 1))
        invalid = np.zeros((50 - 3 * 10 * b + 30, 3))
        ids.append(np.concatenate([corners, np.zeros_like(invalid, dtype=np.int32)]))
        bary.append(np.concatenate([one_hot, invalid]))
        weight.append(rng.uniform(0.1, 1.0, size=len(ids[-1])))
    vertex_ids, barycentrics = np.stack(ids).astype(np.int32), np.stack(bary).astype(np.float32)
    weights = np.stack(weight).astype(np.float32)
    colours, normals, lighting = _photos_of(true_albedo, vertex_ids, barycentrics, rng)

    albedo, coverage = (t.numpy() for t in al.unwrap(colours, normals, lighting, vertex_ids, barycentrics,
                                                     weights, v))

    assert albedo.shape == (batch, v, 3) and coverage.shape == (batch, v)
    for b in range(batch):
        covered = np.zeros(v, bool)
        covered[triangles[:20 + 10 * b].ravel()] = True
        expected = np.zeros(v)
        np.add.at(expected, vertex_ids[b].ravel(), (barycentrics[b] * weights[b][:, None]).ravel())
        np.testing.assert_allclose(coverage[b], expected, rtol=1e-5)
        assert np.all(coverage[b][covered] > 0) and np.all(coverage[b][~covered] == 0)
        np.testing.assert_allclose(albedo[b][covered], true_albedo[b][covered], rtol=1e-5)
        assert np.all(albedo[b][~covered] == 0)


def test_unwrap_inside_triangles_is_the_weighted_mean_and_exact_for_constant_albedo():
    rng = np.random.default_rng(1)
    points, triangles = grid_mesh(6)
    v, p = len(points), 400
    vertex_ids = triangles[rng.integers(0, len(triangles), size=(1, p))].astype(np.int32)
    barycentrics = rng.dirichlet(np.ones(3), size=(1, p)).astype(np.float32)
    weights = rng.uniform(0.0, 1.0, size=(1, p)).astype(np.float32)
    constant = np.broadcast_to(np.array([0.7, 0.5, 0.4], np.float32), (1, v, 3))
    colours, normals, lighting = _photos_of(constant, vertex_ids, barycentrics, rng)
    albedo, coverage = (t.numpy() for t in al.unwrap(colours, normals, lighting, vertex_ids, barycentrics,
                                                     weights, v))
    covered = coverage[0] > 0
    np.testing.assert_allclose(albedo[0][covered], constant[0][covered], rtol=1e-5)
    np.testing.assert_allclose(coverage.sum(), weights.sum(), rtol=1e-5)  # barycentrics sum to 1


def test_unwrap_fit_weighs_by_both_confidences_validity_and_drops_large_residuals():
    # Three samples on vertex 0 (albedo 0.2, 0.4, 0.9), one on vertex 1 that is invalid.
    colours = np.array([[[0.2] * 3, [0.4] * 3, [0.9] * 3, [0.5] * 3]], np.float32)
    lighting = np.zeros((1, 3, 9), np.float32)
    lighting[..., 0] = 1.0 / SH_CONSTANTS[0]  # unit inverse shading: albedo = colour
    fit = {
        "colours": colours, "normals": np.tile([0.0, 0.0, 1.0], (1, 4, 1)).astype(np.float32),
        "lighting": lighting,
        "vertex_ids": np.array([[[0, 1, 2]] * 3 + [[1, 2, 0]]], np.int32),
        "barycentrics": np.array([[[1.0, 0.0, 0.0]] * 3 + [[1.0, 0.0, 0.0]]], np.float32),
        "photometric_confidence": np.array([[1.0, 0.5, 1.0, 1.0]], np.float32),
        "geometric_confidence": np.array([[0.5, 1.0, 0.25, 1.0]], np.float32),
        "valid": np.array([[1.0, 1.0, 1.0, 0.0]], np.float32),
        "photometric_residual": np.array([[[0.0] * 3, [0.1] * 3, [0.5] * 3, [0.0] * 3]], np.float32),
    }
    albedo, coverage = (t.numpy() for t in al.unwrap_fit(fit, 3))
    np.testing.assert_allclose(coverage[0], [1.25, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(albedo[0, 0], [(0.5 * 0.2 + 0.5 * 0.4 + 0.25 * 0.9) / 1.25] * 3, rtol=1e-6)
    albedo, coverage = (t.numpy() for t in al.unwrap_fit(fit, 3, max_residual=0.3))  # |r| = 0.87 dropped
    np.testing.assert_allclose(coverage[0], [1.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(albedo[0, 0], [0.3] * 3, rtol=1e-6)


def _low_rank_photos(rng, n=120, v=40, sds=(0.08, 0.04, 0.02)):
    """Per-vertex albedo ``(N, V, 3)`` = mean + Z diag(sd) Q exactly: Q ``(K, 3V)`` orthonormal and
    0 at vertices 0 and 1 (constant, so that they may go unseen without loss), Z with zero mean and
    ``Z^T Z / N = I``, so the sample PCA is the truth."""
    k = len(sds)
    q = np.zeros((k, 3 * v))
    q[:, 6:] = np.linalg.qr(rng.normal(size=(3 * v - 6, k)))[0].T
    z = rng.normal(size=(n, k))
    z = np.linalg.qr(z - z.mean(axis=0))[0] * np.sqrt(n)  # still zero mean: columns span a zero-mean subspace
    mean = rng.uniform(0.3, 0.7, size=3 * v)
    data = mean + (z * np.array(sds)) @ q
    return data.reshape(n, v, 3), mean.reshape(v, 3), q, np.square(sds)


def _angles(components, q):
    return scipy.linalg.subspace_angles(components.reshape(len(components), -1).T, q.T)


def test_pca_of_fully_covered_photos_is_the_known_subspace_and_variances():
    rng = np.random.default_rng(2)
    data, mean, q, variances = _low_rank_photos(rng)
    n, v, _ = data.shape
    prior = np.full((v, 3), 0.5)
    learnt = al.learn_albedo(data, np.ones((n, v)), prior, 3, min_photos=10)
    np.testing.assert_allclose(learnt.mean, mean, atol=1e-6)
    np.testing.assert_allclose(learnt.variance, variances, rtol=1e-5)
    assert np.max(_angles(learnt.basis, q)) < 1e-5
    for k in range(3):  # each mode is sd_k times the truth's unit direction, up to sign
        unit = learnt.basis[k].ravel() / np.sqrt(variances[k])
        np.testing.assert_allclose(abs(unit @ q[k]), 1.0, atol=1e-5)
        assert unit[np.argmax(np.abs(unit))] > 0
    assert np.all(learnt.support == 1) and learnt.photos == n


def test_missing_vertices_are_filled_by_em_and_unseen_ones_fall_back_to_the_prior():
    rng = np.random.default_rng(3)
    data, mean, q, variances = _low_rank_photos(rng, n=80, v=30)
    n, v, _ = data.shape
    coverage = np.ones((n, v))
    for i in range(n):  # every photo misses a random band of a third of the vertices
        start = rng.integers(0, v)
        coverage[i, (start + np.arange(v // 3)) % v] = 0.0
    coverage[:, 0] = 0.0  # vertex 0: never seen
    coverage[:, 1] = np.arange(n) < 5  # vertex 1: seen in 5 photos, a quarter of min_photos
    data = np.where(coverage[..., None] > 0, data, rng.uniform(0, 1, size=data.shape))  # garbage where unseen
    prior = rng.uniform(0.4, 0.6, size=(v, 3))

    learnt = al.learn_albedo(data, coverage, prior, 3, min_photos=20, iterations=300, tolerance=1e-9)

    seen = np.arange(2, v)
    np.testing.assert_allclose(learnt.mean[seen], mean[seen], atol=1e-5)
    true_modes = q.reshape(3, v, 3)[:, seen].reshape(3, -1)
    assert np.max(_angles(learnt.basis[:, seen], true_modes)) < 1e-5
    np.testing.assert_allclose(learnt.support[[0, 1]], [0.0, 0.25])
    np.testing.assert_allclose(learnt.mean[0], prior[0], atol=1e-6)
    np.testing.assert_allclose(learnt.basis[:, 0], 0.0)
    np.testing.assert_allclose(learnt.mean[1], 0.25 * mean[1] + 0.75 * prior[1], atol=1e-5)
    np.testing.assert_allclose(learnt.variance, variances, rtol=1e-4)
    # One round (mean filling, no EM) is measurably off: the iterations are what recover it.
    once = al.learn_albedo(data, coverage, prior, 3, min_photos=20, iterations=1)
    assert np.max(_angles(once.basis[:, seen], true_modes)) > 10 * np.max(_angles(learnt.basis[:, seen], true_modes))


def test_range_guard_and_degenerate_data_never_give_nan():
    rng = np.random.default_rng(4)
    v = 30
    mean = rng.uniform(-0.2, 1.3, size=(v, 3))
    basis = rng.normal(scale=0.5, size=(4, v, 3))
    clipped, shrunk = al.within_range(mean, basis)
    sd = np.sqrt(np.sum(shrunk ** 2, axis=0))
    low, high = al.ALBEDO_RANGE
    assert clipped.min() >= low and clipped.max() <= high
    assert (clipped - 3 * sd).min() >= low - 1e-12 and (clipped + 3 * sd).max() <= high + 1e-12
    ratio = shrunk / basis  # one factor per vertex: colour directions kept
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :, :1], ratio.shape), atol=1e-12)
    # Identical photos (no variance) and a vertex nobody sees: zeros, never NaN.
    same = np.broadcast_to(rng.uniform(0.3, 0.6, size=(1, v, 3)), (10, v, 3))
    coverage = np.ones((10, v))
    coverage[:, 3] = 0.0
    learnt = al.learn_albedo(same, coverage, np.full((v, 3), 0.5), 2, min_photos=5)
    assert np.all(np.isfinite(learnt.basis)) and np.abs(learnt.basis).max() < 1e-12
    assert np.all(learnt.variance < 1e-20)
    np.testing.assert_allclose(learnt.mean[3], 0.5)


def test_accumulator_keeps_photos_and_checks_shapes():
    acc = al.AlbedoAccumulator(5)
    acc.add(np.ones((2, 5, 3)), np.ones((2, 5)))
    acc.add(np.zeros((0, 5, 3)), np.zeros((0, 5)))
    acc.add(2 * np.ones((1, 5, 3)), np.ones((1, 5)))
    albedo, coverage = acc.arrays()
    assert acc.photos == 3 and albedo.shape == (3, 5, 3) and albedo[2, 0, 0] == 2 and coverage.dtype == np.float32
    with pytest.raises(Exception, match="expected albedo"):
        acc.add(np.ones((1, 4, 3)), np.ones((1, 4)))


@pytest.fixture
def learnt_file(tmp_path, toy_uv_model):
    rng = np.random.default_rng(5)
    v = toy_uv_model.model.num_vertices
    learnt = al.LearntAlbedo(rng.uniform(0.2, 0.8, (v, 3)), 0.02 * rng.normal(size=(3, v, 3)), [3e-3, 2e-3, 1e-3],
                             rng.uniform(0, 1, v), photos=17, model="weights.h5 (toy)", sources=("a", "b"))
    path = tmp_path / "albedo.npz"
    al.save_learnt_albedo(learnt, path)
    return learnt, path


def test_file_round_trip_and_uv3dmm_with_learnt_albedo(learnt_file, toy_uv_model):
    learnt, path = learnt_file
    loaded = al.load_learnt_albedo(path)
    for field in ("mean", "basis", "variance", "support"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(learnt, field))
    assert (loaded.photos, loaded.model, loaded.sources) == (17, "weights.h5 (toy)", ("a", "b"))
    model = al.with_learnt_albedo(toy_uv_model.model, path)
    np.testing.assert_array_equal(model.albedo_mean, learnt.mean)
    np.testing.assert_array_equal(model.mean, toy_uv_model.model.mean)
    uv_model = dataclasses.replace(toy_uv_model, model=model)  # same UV layout, new colour model
    uv = tf.constant(toy_uv_model.vertex_uv[None, :5] * 0.98 + 0.01)
    sample = uv_model.sample(uv)
    blend = np.einsum("bpk,bpkc->bpc", sample.barycentrics.numpy(), learnt.mean[sample.vertex_ids.numpy()])
    np.testing.assert_allclose(sample.albedo_mean.numpy(), blend, rtol=1e-5)
    assert sample.albedo_basis.shape[-1] == 3


def _rewrite(path, **changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    arrays = {k: a for k, a in arrays.items() if a is not None}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize("damage, message", [
    (lambda p: _rewrite(p, albedo_basis=None), "missing albedo_basis"),
    (lambda p: _rewrite(p, format=np.array("tfface-uv3dmm/1")), "not a learnt albedo file"),
    (lambda p: _rewrite(p, variance=np.ones(2, np.float32)), "albedo_basis must be"),
    (lambda p: _rewrite(p, albedo_mean=np.full((2, 3), np.nan, np.float32)), "must be|NaN"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "cannot read"),
    (lambda p: p.write_bytes(b"not an npz at all"), "cannot read"),
    (lambda p: p.unlink(), "cannot read"),
])
def test_bad_files_raise_model_file_error(learnt_file, toy_uv_model, damage, message):
    _, path = learnt_file
    damage(path)
    with pytest.raises(ModelFileError, match=message):
        al.with_learnt_albedo(toy_uv_model.model, path)


def test_wrong_vertex_count_is_a_model_file_error(learnt_file):
    _, path = learnt_file
    other = toy_model(*grid_mesh(7))
    with pytest.raises(ModelFileError, match="vertices"):
        al.with_learnt_albedo(other, path)


def test_learn_refuses_the_evaluation_photos(tmp_path, monkeypatch, capsys):
    from tfface.cli import main

    monkeypatch.setenv("TFFACE_SHARED", str(tmp_path))
    status = main(["albedo", "learn", "--weights", str(tmp_path / "w.h5"), "--images",
                   f"{tmp_path / 'data' / 'aflw2000-3d-dev' / 'sub'}:aflw-crops", "--count", "4",
                   "--out", str(tmp_path / "a.npz")])
    assert status == 2 and "evaluation only" in capsys.readouterr().err


@pytest.mark.slow
def test_learn_command_on_real_photos_sees_eyes_and_lips(default_uv_model, tmp_path, capsys):
    """The shipped network fits real CelebA photos; the albedo unwrapped from its fits has dark eyes
    and red lips, and ``--uv-out`` is the shipped UV-3DMM with that albedo."""
    from PIL import Image

    from tfface.cli import main
    from tfface.morphable.uv3dmm import UVMorphableModel
    from tfface.paths import DEFAULT_MODEL

    celeba = shared_or_skip("data", "celeba")
    out, uv_out, preview = tmp_path / "albedo.npz", tmp_path / "learnt-uv3dmm.npz", tmp_path / "albedo.png"
    status = main(["albedo", "learn", "--model", str(DEFAULT_MODEL), "--images", f"{celeba}:celeba", "--count", "24",
                   "--modes", "3", "--min-photos", "4", "--out", str(out), "--uv-out", str(uv_out),
                   "--preview", str(preview)])
    assert status == 0, capsys.readouterr().err
    assert "from 24 photos" in capsys.readouterr().out

    learnt = al.load_learnt_albedo(out)
    assert learnt.photos == 24 and learnt.sources == (f"{celeba}:celeba",) and learnt.basis.shape[0] == 3
    assert np.all(np.isfinite(learnt.basis)) and learnt.variance[0] > 0
    m = default_uv_model.model
    # Regions, among the vertices 24 photos determine (at 128 pixels some small triangles get no sample).
    eyes = np.arange(default_uv_model.num_original_vertices, m.num_vertices)[:2]  # the eye holes' fill vertices
    supported = learnt.support == 1

    def near(landmark: int, radius: float) -> np.ndarray:
        return supported & (np.linalg.norm(m.mean - m.mean[m.landmarks68[landmark]], axis=1) < radius)

    nose, cheeks = np.flatnonzero(near(30, 8.0)), np.flatnonzero(near(2, 15.0) | near(14, 15.0))
    lips = np.flatnonzero(supported & (albedo.region_weights(m.mean.astype(np.float64), m.landmarks68)[0] > 0.9))
    assert np.all(supported[eyes]) and len(nose) >= 10 and len(cheeks) >= 10 and len(lips) >= 10
    brightness = learnt.mean.sum(axis=1)
    redness = learnt.mean[:, 0] / learnt.mean[:, 1]
    assert brightness[eyes].max() < 0.85 * brightness[nose].mean()  # the eyes are darker than the nose
    assert redness[lips].mean() > redness[cheeks].mean() + 0.05  # the lips are redder than the cheeks' skin

    written = UVMorphableModel.load(uv_out)
    np.testing.assert_array_equal(written.vertex_uv, default_uv_model.vertex_uv)
    np.testing.assert_array_equal(written.model.albedo_mean, learnt.mean)
    s = default_uv_model.resolution
    assert Image.open(preview).size == (2 * s, 4 * (s + 16))  # prior and learnt mean, then 3 modes -2 and +2 sd
