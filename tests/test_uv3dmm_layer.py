"""The UVSampling Keras layer: same samples as the UV-3DMM, saved and reloaded with its tables."""

from __future__ import annotations

import dataclasses

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.layers.uv_sampling import UVSampling


@pytest.mark.parametrize("jit_compile", [True, False])
def test_layer_matches_uv_model(toy_uv_model, jit_compile):
    layer = UVSampling.from_uv_model(toy_uv_model, jit_compile=jit_compile)
    uv = np.random.default_rng(0).uniform(-0.1, 1.1, (2, 40, 2)).astype(np.float32)
    got, want = layer(uv), toy_uv_model.sample(uv)
    for field in want._fields:
        np.testing.assert_allclose(getattr(got, field).numpy(), getattr(want, field).numpy(), rtol=1e-6, atol=1e-6)
    assert not layer.trainable_weights


def test_saved_model_reloads_with_tables(tmp_path, toy_uv_model):
    uv_in = keras.Input(shape=(30, 2))
    sample = UVSampling.from_uv_model(toy_uv_model, name="uv3dmm")(uv_in)
    model = keras.Model(uv_in, {"mean": sample.mean, "basis": sample.basis, "valid": sample.valid})
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    uv = np.random.default_rng(1).uniform(0, 1, (3, 30, 2)).astype(np.float32)
    a, b = model(uv), reloaded(uv)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert np.abs(b["mean"].numpy()).max() > 1.0  # real tables, not the zero initialisation


def test_tables_kept_out_of_weights_when_the_owner_rebuilds_them(tmp_path, toy_uv_model):
    uv_in = keras.Input(shape=(30, 2))
    files = {}
    for persist in (True, False):
        layer = UVSampling.from_uv_model(toy_uv_model, persist_tables=persist)
        model = keras.Model(uv_in, layer(uv_in).mean)
        files[persist] = tmp_path / f"persist-{persist}.weights.h5"
        model.save_weights(files[persist])
    for persist in (True, False):
        with h5py.File(files[persist]) as saved:
            names = []
            saved.visit(names.append)
        assert any(name.endswith("vars/0") for name in names) == persist
    # Loading either file keeps a non-persisting layer's own tables.
    layer = UVSampling.from_uv_model(toy_uv_model, persist_tables=False)
    model = keras.Model(uv_in, layer(uv_in).mean)
    uv = np.random.default_rng(3).uniform(0, 1, (2, 30, 2)).astype(np.float32)
    before = model(uv).numpy()
    for persist in (True, False):
        model.load_weights(files[persist])
        np.testing.assert_array_equal(model(uv).numpy(), before)
    assert UVSampling.from_config(layer.get_config()).persist_tables is False


def test_layer_gradient_flows_to_uv(toy_uv_model):
    """The gradient of the sampled mean and basis with respect to the correspondence is that of
    the barycentric blend: non-zero, and equal to central differences inside the triangles."""
    layer = UVSampling.from_uv_model(toy_uv_model, jit_compile=False)
    triangles = toy_uv_model.model.triangles[::7][:6]
    uv = toy_uv_model.vertex_uv[triangles].mean(axis=1)[None].astype(np.float32)  # triangle centroids
    rng = np.random.default_rng(4)
    mean_weights = rng.normal(size=(1, len(uv[0]), 3)).astype(np.float32)
    basis_weights = rng.normal(size=layer(uv).basis.shape).astype(np.float32)

    def value(x):
        sample = layer(x)
        assert np.all(sample.valid.numpy() == 1)
        return tf.reduce_sum(sample.mean * mean_weights) + tf.reduce_sum(sample.basis * basis_weights)

    x = tf.Variable(uv)
    with tf.GradientTape() as tape:
        total = value(x)
    gradient = tape.gradient(total, x).numpy()
    step = 1e-3
    numeric = np.zeros_like(uv)
    for index in np.ndindex(uv.shape):
        shift = np.zeros_like(uv)
        shift[index] = step
        numeric[index] = (value(uv + shift).numpy() - value(uv - shift).numpy()) / (2 * step)
    assert np.all(np.abs(gradient) > 1.0)  # mm per UV unit: the face spans about 100 mm
    np.testing.assert_allclose(gradient, numeric, rtol=2e-2, atol=1e-2 * np.abs(numeric).max())


def test_layer_rejects_bad_uv(toy_uv_model):
    with pytest.raises(InputError):
        UVSampling.from_uv_model(toy_uv_model)(np.zeros((4, 3), np.float32))


def test_vertex_values_evaluate_the_linear_models_at_the_vertices(toy_uv_model):
    layer = UVSampling.from_uv_model(toy_uv_model)
    m = toy_uv_model.model
    rng = np.random.default_rng(2)
    geometry = rng.normal(size=(2, m.num_shape + m.num_expression)).astype(np.float32)
    albedo = rng.normal(size=(2, m.num_albedo)).astype(np.float32)
    basis = np.concatenate([m.shape_basis, m.expression_basis])  # (K, V, 3)
    want = m.mean + np.einsum("bk,kvc->bvc", geometry, basis)
    np.testing.assert_allclose(layer.vertex_values(geometry).numpy(), want, rtol=1e-5, atol=1e-4)
    want = m.albedo_mean + np.einsum("bk,kvc->bvc", albedo, m.albedo_basis)
    np.testing.assert_allclose(layer.vertex_values(albedo, "albedo").numpy(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="part"):
        layer.vertex_values(albedo, "texture")


def test_layers_of_different_truncations_share_no_stale_trace(toy_uv_model):
    """Two samplers with different basis counts, called with the same uv shape in one process,
    each return their own basis (the compiled sampler retraces per table shape)."""
    model = toy_uv_model.model
    uv = np.random.default_rng(2).uniform(0, 1, (2, 16, 2)).astype(np.float32)
    sizes = [(model.num_shape, model.num_expression), (model.num_shape - 1, model.num_expression - 1),
             (model.num_shape, model.num_expression - 1)]
    for num_shape, num_expression in sizes:
        truncated = dataclasses.replace(toy_uv_model, model=model.truncated(num_shape, num_expression,
                                                                            model.num_albedo))
        got = UVSampling.from_uv_model(truncated)(uv)
        want = truncated.sample(uv)
        assert got.basis.shape == (2, 16, 3, num_shape + num_expression)
        np.testing.assert_allclose(got.basis.numpy(), want.basis.numpy(), rtol=1e-6, atol=1e-6)
