"""Pixel sampling by confidence (supplement C), gathering at the samples and bilinear sampling."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.layers.pixel_sampling import (LatticePixelSampler, PixelSampler, bilinear_sample, expected_draws,
                                         gather_pixels, pixel_centres, sample_pixels)

SEED = tf.constant([7, 11], tf.int64)


def region_confidence(batch=2, height=40, width=50):
    """Image 0: a 10x20 block of confidence 1 and a 5x5 block of 0.002 (above 0.001 x max) on a
    background of 0.0005 (below). Image 1: a 3x4 block of confidence 0.3, zero elsewhere."""
    c = np.full((batch, height, width), 0.0005, np.float32)
    c[0, 5:15, 10:30] = 1.0
    c[0, 30:35, 40:45] = 0.002
    c[1] = 0.0
    c[1, 20:23, 0:4] = 0.3
    return c


def test_picks_only_qualifying_pixels_when_enough():
    c = region_confidence()
    indices = sample_pixels(c[:1], 150, 0.001, SEED).numpy()[0]
    assert indices.dtype == np.int32 and len(set(indices)) == 150
    assert np.all(c[0].reshape(-1)[indices] > 0.001)


def test_fills_up_with_random_other_pixels():
    c = region_confidence()
    indices = sample_pixels(c, 300, 0.001, SEED).numpy()
    flat = c.reshape(2, -1)
    for b, count in ((0, 225), (1, 12)):
        qualifying = set(np.flatnonzero(flat[b] > 0.001 * flat[b].max()))
        assert len(qualifying) == count
        chosen = set(indices[b])
        assert len(chosen) == 300 and qualifying <= chosen
    assert np.all((indices >= 0) & (indices < 2000))


def test_qualifying_pixels_are_chosen_uniformly():
    c = np.zeros((1, 10, 10), np.float32)
    c[0, :5] = 1.0  # 50 qualifying pixels, 20 drawn each time
    counts = np.zeros(100)
    for s in range(300):
        np.add.at(counts, sample_pixels(c, 20, 0.001, [s, 0]).numpy()[0], 1)
    assert counts[50:].sum() == 0
    # Each qualifying pixel: Binomial(300, 0.4), mean 120, std 8.5.
    assert np.abs(counts[:50] - 120).max() < 40


def test_deterministic_with_seed_and_fresh_samples_per_call():
    c = region_confidence()
    np.testing.assert_array_equal(sample_pixels(c, 100, 0.001, SEED), sample_pixels(c, 100, 0.001, SEED))
    a, b = PixelSampler(100, seed=3), PixelSampler(100, seed=3)
    first_a, first_b = a(c).numpy(), b(c).numpy()
    np.testing.assert_array_equal(first_a, first_b)
    second_a = a(c).numpy()
    assert not np.array_equal(np.sort(first_a[0]), np.sort(second_a[0]))
    np.testing.assert_array_equal(second_a, b(c).numpy())


@pytest.mark.parametrize("fill", [0.0, np.nan, np.inf, -1.0])
def test_zero_or_non_finite_confidence_samples_uniformly(fill):
    c = np.full((2, 8, 8), fill, np.float32)
    indices = sample_pixels(c, 40, 0.001, SEED).numpy()
    for row in indices:
        assert len(set(row)) == 40 and row.min() >= 0 and row.max() < 64


def test_nan_counts_as_zero_next_to_valid_confidence():
    c = np.full((1, 8, 8), np.nan, np.float32)
    c[0, 0, :5] = 0.5
    indices = sample_pixels(c, 5, 0.001, SEED).numpy()[0]
    np.testing.assert_array_equal(np.sort(indices), np.arange(5))


def test_image_smaller_than_num_samples_is_sampled_in_rounds():
    c = np.zeros((1, 4, 5), np.float32)
    c[0, 0, :3] = 1.0
    indices = sample_pixels(c, 50, 0.001, SEED).numpy()[0]
    counts = np.bincount(indices, minlength=20)
    assert len(indices) == 50 and counts.max() <= 3  # ceil(50 / 20) rounds
    np.testing.assert_array_equal(counts[:3], [3, 3, 3])  # qualifying pixels in every round
    assert counts.sum() == 50


def test_pixel_centres_and_gather():
    indices = tf.constant([[0, 7, 19], [3, 3, 10]])
    np.testing.assert_array_equal(
        pixel_centres(indices, 5).numpy(),
        [[[0.5, 0.5], [2.5, 1.5], [4.5, 3.5]], [[3.5, 0.5], [3.5, 0.5], [0.5, 2.5]]],
    )
    maps = tf.reshape(tf.range(2 * 4 * 5 * 2, dtype=tf.float32), [2, 4, 5, 2])
    values = gather_pixels(maps, indices).numpy()
    np.testing.assert_array_equal(values[0, 1], maps.numpy()[0, 1, 2])
    np.testing.assert_array_equal(values[1, 2], maps.numpy()[1, 2, 0])


def test_gather_gradient_matches_finite_differences():
    maps = np.random.default_rng(0).normal(size=(2, 3, 4, 2))
    indices = tf.constant([[0, 5, 5, 11], [2, 3, 7, 8]])
    theoretical, numerical = tf.test.compute_gradient(lambda m: gather_pixels(m, indices), [maps])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-9)


def test_layer_in_a_model_with_dynamic_shapes_saves_and_loads(tmp_path):
    inputs = keras.Input(shape=(None, None))
    outputs = PixelSampler(num_samples=30, threshold=0.01, seed=5)(inputs)
    model = keras.Model(inputs, outputs)
    c = region_confidence()
    indices = model.predict(c, verbose=0)
    assert indices.shape == (2, 30) and indices.dtype == np.int32
    assert np.all(c.reshape(2, -1)[0, indices[0]] > 0.01)
    path = tmp_path / "sampler.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    layer = restored.layers[-1]
    assert isinstance(layer, PixelSampler) and layer.get_config()["num_samples"] == 30
    assert layer.threshold == 0.01 and layer.seed == 5
    again = restored.predict(c, verbose=0)
    assert again.shape == (2, 30) and np.all(c.reshape(2, -1)[0, again[0]] > 0.01)


def test_config_round_trip():
    layer = PixelSampler(num_samples=123, threshold=0.2, seed=9, name="sampler")
    clone = PixelSampler.from_config(layer.get_config())
    assert (clone.num_samples, clone.threshold, clone.seed, clone.name) == (123, 0.2, 9, "sampler")
    c = region_confidence()
    np.testing.assert_array_equal(layer(c), clone(c))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sample_pixels(np.zeros((4, 4)), 3, 0.001, SEED), r"\(B, H, W\)"),
        (lambda: sample_pixels(np.zeros((1, 4, 4), np.int32), 3, 0.001, SEED), "float"),
        (lambda: PixelSampler(num_samples=0), "positive"),
        (lambda: PixelSampler(threshold=1.5), r"\[0, 1\)"),
        (lambda: gather_pixels(np.zeros((4, 4, 3)), [[0]]), r"\(B, H, W, C\)"),
        (lambda: gather_pixels(np.zeros((1, 4, 4, 3)), [[0.0]]), "integers"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_lattice_sampler_is_deterministic_and_spread():
    sampler = LatticePixelSampler(100, 100)
    confidence = tf.random.uniform([2, 40, 40])
    first, second = sampler(confidence).numpy(), sampler(tf.zeros([2, 40, 40])).numpy()
    np.testing.assert_array_equal(first, second)
    assert first.shape == (2, 100) and len(np.unique(first[0])) == 100
    rows = first[0] // 40
    assert rows.min() == 0 and rows.max() == 39  # covers the image top to bottom
    small = LatticePixelSampler(30, 30)(tf.zeros([1, 4, 4])).numpy()[0]
    assert sorted(np.bincount(small)) == [1] * 2 + [2] * 14  # every pixel, repeated cyclically


@pytest.mark.parametrize("num_samples", [60, 225, 300, 2500])  # fewer than, as many as, more than qualify; rounds
def test_expected_draws_are_the_sampling_frequencies(num_samples):
    c = region_confidence(height=20, width=25)[:, ::2, ::2].copy()  # 10 x 13 pixels, 2 x 5 of them near 1
    c[0, 2:6, 3:10] = 1.0
    draws = expected_draws(c, num_samples, 0.001).numpy()
    np.testing.assert_allclose(draws.sum(1), num_samples, rtol=1e-5)
    rounds = 400
    counts = np.zeros_like(draws)
    for i in range(rounds):
        indices = sample_pixels(c, num_samples, 0.001, tf.constant([i, 3])).numpy()
        for b in range(len(c)):
            np.add.at(counts[b], indices[b], 1.0)
    frequency = counts / rounds
    # binomial standard error of a pixel's mean count, at most sqrt(rounds_per_pixel / 4 / rounds)
    tolerance = 5 * np.sqrt((np.ceil(num_samples / draws.shape[1]) / 4) / rounds)
    assert np.abs(frequency - draws).max() < tolerance
    assert draws.max() > 4 * tolerance  # the check discriminates


def test_lattice_weights_estimate_the_training_draws():
    c = region_confidence()
    dense = LatticePixelSampler(40 * 50, 300)
    indices = dense(c)
    np.testing.assert_allclose(dense.sample_weights(c, indices).numpy(),
                               tf.gather(expected_draws(c, 300, 0.001), indices, batch_dims=1).numpy())
    sparse = LatticePixelSampler(500, 300)  # every 4th pixel stands for 4
    weights = sparse.sample_weights(c, sparse(c)).numpy()
    np.testing.assert_allclose(weights.sum(1), 300, rtol=0.05)
    assert np.isclose(weights.max(), 4 * expected_draws(c, 300, 0.001).numpy().max())


def test_lattice_sampler_config_round_trip():
    sampler = LatticePixelSampler(500, 300, 0.01, name="lattice")
    copy = LatticePixelSampler.from_config(sampler.get_config())
    assert (copy.num_samples, copy.training_samples, copy.threshold) == (500, 300, 0.01)
    with pytest.raises(InputError, match="num_samples"):
        LatticePixelSampler(0, 300)


def test_bilinear_sample_is_exact_on_linear_images():
    ys, xs = np.mgrid[0:8, 0:10] + 0.5
    image = np.stack([2.0 * xs + 3.0 * ys, xs - ys], -1)[None].astype(np.float32)  # linear in the centres
    points = np.random.default_rng(0).uniform([0.5, 0.5], [9.5, 7.5], (1, 50, 2)).astype(np.float32)
    sampled = bilinear_sample(image, points).numpy()[0]
    x, y = points[0, :, 0], points[0, :, 1]
    np.testing.assert_allclose(sampled, np.stack([2 * x + 3 * y, x - y], -1), rtol=1e-5, atol=1e-4)
    outside = bilinear_sample(image, np.array([[[-5.0, 0.5], [40.0, 7.5]]], np.float32)).numpy()[0]
    np.testing.assert_allclose(outside, [image[0, 0, 0], image[0, 7, 9]], atol=1e-5)  # nearest edge
