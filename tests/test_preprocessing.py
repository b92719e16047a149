"""Softplus preprocessing (supplement E) and its inverse."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.layers.preprocessing import (
    InverseSoftplusPreprocessing,
    SoftplusPreprocessing,
    inverse_softplus_preprocess,
    softplus_preprocess,
)


def test_known_values():
    values = softplus_preprocess(np.array([0.0, 1.0, 0.5])).numpy()
    np.testing.assert_allclose(values, [math.log(2) / 4, math.log1p(math.exp(4)) / 4, math.log1p(math.exp(2)) / 4])
    np.testing.assert_allclose(softplus_preprocess(np.array([0.0]), xi=2.0).numpy(), [math.log(2) / 2])


def test_black_image_is_lifted_and_inverts_to_black():
    black = np.zeros((2, 4, 5, 3), np.float32)
    lifted = SoftplusPreprocessing()(black).numpy()
    np.testing.assert_allclose(lifted, math.log(2) / 4, rtol=1e-6)
    np.testing.assert_allclose(InverseSoftplusPreprocessing()(lifted).numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_round_trip(dtype, tol):
    images = np.random.default_rng(0).uniform(-3, 3, size=(1000,)).astype(dtype)
    back = inverse_softplus_preprocess(softplus_preprocess(images)).numpy()
    np.testing.assert_allclose(back, images, atol=tol)
    positive = np.random.default_rng(1).uniform(0.01, 3, size=(1000,)).astype(dtype)
    np.testing.assert_allclose(softplus_preprocess(inverse_softplus_preprocess(positive)).numpy(), positive, rtol=tol)


def test_extremes_stay_finite():
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32)
    forward = softplus_preprocess(x).numpy()
    assert np.all(np.isfinite(forward)) and np.all(forward >= 0)
    np.testing.assert_allclose(forward[3:], x[3:])
    inverse = inverse_softplus_preprocess(np.array([-1.0, 0.0, 1e-30, 1e4], np.float32)).numpy()
    assert np.all(np.isfinite(inverse))
    assert inverse[0] == inverse[1] < inverse[2] < -10 and inverse[3] == 1e4


def test_gradients_match_finite_differences():
    x = np.random.default_rng(2).uniform(-1, 2, size=(6,))
    for function, point in ((softplus_preprocess, x), (inverse_softplus_preprocess, np.abs(x) + 0.05)):
        theoretical, numerical = tf.test.compute_gradient(function, [point], delta=1e-6)
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("layer_class", [SoftplusPreprocessing, InverseSoftplusPreprocessing])
@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((1, 4, 4, 1), np.float32), "RGB"),  # grey
        (np.zeros((1, 4, 4, 4), np.float32), "RGB"),  # RGBA
        (np.zeros((4, 4, 3), np.float32), "RGB"),  # no batch
        (np.zeros((1, 4, 4, 3), np.uint8), "float"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), "non-finite"),
    ],
)
def test_bad_images_raise(layer_class, images, message):
    with pytest.raises(InputError, match=message):
        layer_class()(images)


def test_non_finite_pixels_are_black_in_graph_mode():
    images = np.full((1, 2, 2, 3), 0.5, np.float32)
    images[0, 0, 0] = [np.nan, np.inf, -np.inf]
    out = tf.function(SoftplusPreprocessing())(tf.constant(images)).numpy()
    np.testing.assert_allclose(out[0, 0, 0], math.log(2) / 4, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1, 1], math.log1p(math.exp(2)) / 4, rtol=1e-6)


def test_layers_save_and_load_in_a_model(tmp_path):
    inputs = keras.Input(shape=(None, None, 3))
    lifted = SoftplusPreprocessing(xi=2.0)(inputs)
    model = keras.Model(inputs, [lifted, InverseSoftplusPreprocessing(xi=2.0)(lifted)])
    images = np.random.default_rng(3).uniform(size=(2, 6, 7, 3)).astype(np.float32)
    model.save(tmp_path / "pre.keras")
    restored = keras.models.load_model(tmp_path / "pre.keras")
    lifted_out, back = restored.predict(images, verbose=0)
    np.testing.assert_allclose(lifted_out, np.log1p(np.exp(2 * images)) / 2, rtol=1e-6)
    np.testing.assert_allclose(back, images, atol=2e-6)
    assert restored.layers[1].get_config()["xi"] == 2.0


def test_xi_must_be_positive():
    with pytest.raises(InputError, match="xi"):
        SoftplusPreprocessing(xi=0.0)
