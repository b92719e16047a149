"""Adaptive regularisation weights (supplement G, eq. 18): dynamics, clamps and persistence."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.layers.adaptive_regularization import AdaptiveRegularizer


def reference_weights(squares, theta=0.05, e_a2=0.1, e_w=0.1, w=0.1):
    """Eq. 18 written out in plain Python for one coefficient and a sequence of mean squares."""
    history = []
    for a2 in squares:
        e_a2 = (1 - theta) * a2 + theta * e_a2
        k = max(min(e_a2, 1.01), 0.99)
        e_w = (1 - theta) * w + theta * e_w
        w = max(min(k * e_w, 1e4), 1e-4)
        history.append(w)
    return np.array(history)


def run(layer, coefficients):
    """Feed a (steps, B, K) sequence through ``layer.update`` in one tf.function; (steps, K) weights."""

    @tf.function
    def loop(sequence):
        return tf.map_fn(layer.update, sequence)

    return loop(tf.constant(coefficients, tf.float32)).numpy()


def test_first_update_by_hand():
    layer = AdaptiveRegularizer(3)
    np.testing.assert_allclose(layer.weights_for_solve().numpy(), [0.1, 0.1, 0.1])
    layer.update(np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))  # mean squares 2, 0, 1
    # E[a2]_1 = 0.95 * (2, 0, 1) + 0.005 -> k = (1.01, 0.99, 0.99); E[w]_1 = 0.1; w_1 = 0.1 k.
    np.testing.assert_allclose(layer.mean_squared.numpy(), [1.905, 0.005, 0.955], rtol=1e-6)
    np.testing.assert_allclose(layer.weights_for_solve().numpy(), [0.101, 0.099, 0.099], rtol=1e-6)
    assert int(layer.iterations.numpy()) == 1


def test_matches_equation_on_a_constant_variance_sequence():
    """Coefficients with variance s^2: weights rise for s^2 > 1, fall for s^2 < 1, as eq. 18."""
    rng = np.random.default_rng(0)
    scales = np.array([3.0, 0.3, 1.0])
    coefficients = rng.normal(size=(400, 16, 3)) * scales
    weights = run(AdaptiveRegularizer(3), coefficients)
    for i in range(3):
        expected = reference_weights(np.mean(coefficients[:, :, i] ** 2, axis=1))
        np.testing.assert_allclose(weights[:, i], expected, rtol=1e-4)
    assert weights[-1, 0] > 10 * 0.1 and weights[-1, 1] < 0.1 / 10
    assert 0.1 / 3 < weights[-1, 2] < 0.1 * 3  # variance 1: the weight only dithers


def test_theta_zero_gives_pure_one_percent_steps_and_clamps_hold():
    layer = AdaptiveRegularizer(2, theta=0.0)
    # Mean squares 4 and 0.25 every step: w_n = 0.1 * 1.01^n and 0.1 * 0.99^n until the clamps.
    coefficients = np.broadcast_to([2.0, 0.5], (2000, 1, 2))
    weights = run(layer, coefficients)
    n = np.arange(1, 2001)
    np.testing.assert_allclose(weights[:, 0], np.minimum(0.1 * 1.01**n, 1e4), rtol=1e-4)
    np.testing.assert_allclose(weights[:, 1], np.maximum(0.1 * 0.99**n, 1e-4), rtol=1e-4)
    assert weights[:, 0].max() == np.float32(1e4) and weights[:, 1].min() == np.float32(1e-4)


def test_rate_inside_the_clamp_is_the_mean_square():
    layer = AdaptiveRegularizer(1, theta=0.0)
    layer.update(np.sqrt([[1.005]]))
    np.testing.assert_allclose(layer.weights_for_solve().numpy(), [0.1005], rtol=1e-6)


def test_closed_loop_drives_mean_square_to_one():
    """Ridge-shrunk coefficients alpha = x / (1 + w) with x ~ N(0, 4): E[alpha^2] = 1 at w = 1."""
    layer = AdaptiveRegularizer(2)
    rng = np.random.default_rng(1)
    squares = []
    for _ in range(600):
        alpha = rng.normal(size=(32, 2)) * 2.0 / (1.0 + layer.weights_for_solve().numpy())
        squares.append(np.mean(alpha**2, axis=0))
        layer.update(alpha)
    np.testing.assert_allclose(layer.weights_for_solve().numpy(), [1.0, 1.0], atol=0.25)
    np.testing.assert_allclose(np.mean(squares[-200:], axis=0), [1.0, 1.0], atol=0.15)


def test_call_updates_only_in_training_and_returns_weights_in_force():
    layer = AdaptiveRegularizer(2)
    coefficients = np.array([[3.0, 3.0], [3.0, 3.0]], np.float32)
    np.testing.assert_allclose(layer(coefficients).numpy(), np.full((2, 2), 0.1))
    layer(coefficients, training=False)
    assert int(layer.iterations.numpy()) == 0
    np.testing.assert_allclose(layer(coefficients, training=True).numpy(), np.full((2, 2), 0.1))
    assert int(layer.iterations.numpy()) == 1
    np.testing.assert_allclose(layer.weights_for_solve().numpy(), [0.101, 0.101], rtol=1e-6)
    np.testing.assert_allclose(layer.loss_weights().numpy(), [0.101, 0.101], rtol=1e-6)


def test_non_finite_coefficients_leave_state_unchanged():
    layer = AdaptiveRegularizer(2)
    layer.update(np.array([[np.nan, 2.0]]))
    np.testing.assert_allclose(layer.weights_for_solve().numpy(), [0.1, 0.101], rtol=1e-6)
    np.testing.assert_allclose(layer.mean_squared.numpy()[0], 0.1)
    assert np.all(np.isfinite(layer.mean_omega.numpy()))


def test_state_is_non_trainable():
    layer = AdaptiveRegularizer(4)
    assert layer.trainable_weights == []
    assert {v.name for v in layer.non_trainable_weights} == {"omega", "mean_squared", "mean_omega", "iterations"}


def test_saves_and_restores_with_keras_model(tmp_path):
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, AdaptiveRegularizer(3, theta=0.5, name="adaptive")(inputs))
    layer = model.get_layer("adaptive")
    for step in range(5):
        layer.update(np.full((2, 3), [2.0, 0.1, 1.0], np.float32))
    saved = [v.numpy() for v in layer.non_trainable_weights]
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras").get_layer("adaptive")
    assert restored.get_config()["theta"] == 0.5 and restored.num_coefficients == 3
    for a, b in zip(saved, restored.non_trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(restored.update(np.ones((1, 3))).numpy(), layer.update(np.ones((1, 3))).numpy())


def test_saves_and_restores_with_checkpoint(tmp_path):
    layer = AdaptiveRegularizer(2)
    layer.update(np.array([[5.0, 0.0]]))
    path = tf.train.Checkpoint(regularizer=layer).write(str(tmp_path / "ckpt"))
    fresh = AdaptiveRegularizer(2)
    tf.train.Checkpoint(regularizer=fresh).read(path).assert_consumed()
    for a, b in zip(layer.non_trainable_weights, fresh.non_trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(fresh.iterations.numpy()) == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: AdaptiveRegularizer(0), "num_coefficients"),
        (lambda: AdaptiveRegularizer(2, theta=1.5), "theta"),
        (lambda: AdaptiveRegularizer(2, weight_range=(1.0, 0.5)), "weight_range"),
        (lambda: AdaptiveRegularizer(2).update(np.zeros((4, 3))), r"\(\.\.\., 2\)"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(InputError, match=message):
        make()
