"""Pixel sampling for the least-squares layers (supplement C): random in training, a lattice at inference.

Per image, ``num_samples`` pixels are drawn at random among those whose confidence exceeds
``threshold`` times the image's maximum confidence; if fewer qualify, the rest are drawn at
random from the other pixels. Implementation: every pixel gets a uniform random key in [0, 1),
plus 1 if it qualifies, and the ``num_samples`` largest keys win (``tf.math.top_k``): a uniform
random subset of the qualifying pixels first, filled up by a uniform random subset of the
others. The choice is not differentiable (indices are integers); what is gathered at the
samples is (:func:`gather_pixels`).

At inference :class:`LatticePixelSampler` takes a fixed lattice of pixels instead (every pixel by
default), weighted so that the fit estimates the training fit (:func:`expected_draws`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfface.errors import InputError

__all__ = ["LatticePixelSampler", "PixelSampler", "bilinear_sample", "expected_draws", "gather_pixels", "pixel_centres",
           "sample_pixels"]


def _qualified(confidence: tf.Tensor, threshold: float) -> tf.Tensor:
    """``(B, H * W)`` bool, row-major: the pixels whose confidence exceeds ``threshold`` times
    their image's maximum (non-finite values count as 0, and 0 never qualifies)."""
    shape = tf.shape(confidence)
    flat = tf.reshape(confidence, [shape[0], shape[1] * shape[2]])
    flat = tf.where(tf.math.is_finite(flat), flat, tf.zeros_like(flat))
    return tf.logical_and(flat > threshold * tf.reduce_max(flat, axis=1, keepdims=True), flat > 0)


def sample_pixels(
    confidence: tf.Tensor, num_samples: int, threshold: float, seed: tf.Tensor
) -> tf.Tensor:
    """Flat indices of ``num_samples`` pixels per image chosen by confidence (supplement C).

    Args:
        confidence: ``(B, H, W)`` float. Per-pixel confidence, expected >= 0. Non-finite values
            (NaN, +-inf) count as 0; pixels with confidence <= 0 never qualify, so an all-zero
            (or all-NaN) map is sampled uniformly at random.
        num_samples: Samples per image, P.
        threshold: A pixel qualifies when ``confidence > threshold * max(confidence)`` over its
            image.
        seed: ``(2,)`` int tensor. Seed of the stateless random keys: equal seeds give equal
            samples.

    Returns:
        indices: ``(B, P)`` int32. Row-major flat pixel indices ``row * W + col``. Within an image
            they are distinct when ``H * W >= P``. Smaller images are sampled in ``ceil(P / (H W))``
            rounds (as from that many copies of the image, without replacement): every pixel appears
            at most that many times, qualifying pixels first.
    """
    confidence = tf.convert_to_tensor(confidence)
    if confidence.shape.rank != 3:
        raise InputError(f"confidence must have shape (B, H, W), got {confidence.shape}")
    if not confidence.dtype.is_floating:
        raise InputError(f"confidence must be a float tensor, got {confidence.dtype.name}")
    batch = tf.shape(confidence)[0]
    num_pixels = tf.shape(confidence)[1] * tf.shape(confidence)[2]
    qualified = _qualified(confidence, threshold)
    rounds = (num_samples + num_pixels - 1) // num_pixels
    keys = tf.random.stateless_uniform([batch, rounds * num_pixels], seed=seed, dtype=tf.float32)
    scores = keys + tf.tile(tf.cast(qualified, tf.float32), [1, rounds])
    _, winners = tf.math.top_k(scores, k=num_samples, sorted=False)
    return tf.math.floormod(winners, num_pixels)


def expected_draws(confidence: tf.Tensor, num_samples: int, threshold: float) -> tf.Tensor:
    """How often :func:`sample_pixels` draws each pixel, on average over its random keys.

    With ``N`` pixels of which ``Q`` qualify and ``r = ceil(P / N)`` rounds, a qualifying pixel
    is drawn ``min(P, r Q) / Q`` times and any other ``max(P - r Q, 0) / (N - Q)`` times. A fit
    whose samples are weighted by these counts (divided by its own draws per pixel) has the
    expected normal equations of the training fit: the same balance of data and priors.

    Args:
        confidence: ``(B, H, W)`` float. As for :func:`sample_pixels`.
        num_samples, threshold: As for :func:`sample_pixels`.

    Returns:
        draws: ``(B, H * W)`` float32. Expected draws per pixel, row-major; each image's sum is
            ``num_samples``.
    """
    confidence = tf.convert_to_tensor(confidence)
    num_pixels = tf.shape(confidence)[1] * tf.shape(confidence)[2]
    qualified = _qualified(confidence, threshold)
    count = tf.reduce_sum(tf.cast(qualified, tf.float32), axis=1, keepdims=True)  # Q, (B, 1)
    pixels = tf.cast(num_pixels, tf.float32)
    copies = tf.math.ceil(num_samples / pixels) * count  # r Q
    on = tf.minimum(float(num_samples), copies) / tf.maximum(count, 1.0)
    off = tf.maximum(num_samples - copies, 0.0) / tf.maximum(pixels - count, 1.0)
    return tf.where(qualified, on, off)


def pixel_centres(indices: tf.Tensor, width: int | tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Pixel-centre coordinates ``(col + 0.5, row + 0.5)`` of flat indices (x right, y down).

    Args:
        indices: ``(B, P)`` int. Flat indices ``row * width + col``.
        width: Image width W.

    Returns:
        coordinates: ``(B, P, 2)`` of ``dtype``.
    """
    indices = tf.convert_to_tensor(indices)
    width = tf.cast(width, indices.dtype)
    col = tf.math.floormod(indices, width)
    row = tf.math.floordiv(indices, width)
    return tf.cast(tf.stack([col, row], axis=-1), dtype) + 0.5


def gather_pixels(maps: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Values of per-pixel ``maps`` at sampled pixels; differentiable with respect to ``maps``.

    Args:
        maps: ``(B, H, W, C)``. Any per-pixel maps (image, network outputs).
        indices: ``(B, P)`` int. Flat indices from :func:`sample_pixels` / :class:`PixelSampler`.

    Returns:
        values: ``(B, P, C)``.
    """
    maps = tf.convert_to_tensor(maps)
    indices = tf.convert_to_tensor(indices)
    if maps.shape.rank != 4:
        raise InputError(f"maps must have shape (B, H, W, C), got {maps.shape}")
    if indices.shape.rank != 2 or not indices.dtype.is_integer:
        raise InputError(f"indices must be integers of shape (B, P), got {indices.dtype.name} {indices.shape}")
    shape = tf.shape(maps)
    flat = tf.reshape(maps, [shape[0], shape[1] * shape[2], shape[3]])
    return tf.gather(flat, indices, batch_dims=1)


def bilinear_sample(images: tf.Tensor, points: tf.Tensor) -> tf.Tensor:
    """Sample ``(B, H, W, C)`` images at ``(B, ..., 2)`` pixel positions (x, y; centres at +0.5).

    Positions outside the image take the nearest edge pixel. Built from flat gathers
    (:func:`gather_pixels`' op), so it converts to TFLite's built-in ops.

    Returns:
        ``(B, ..., C)`` bilinearly interpolated values; differentiable with respect to ``images``.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    points = tf.convert_to_tensor(points, tf.float32)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    x = tf.clip_by_value(points[..., 0] - 0.5, 0.0, tf.cast(width - 1, tf.float32))
    y = tf.clip_by_value(points[..., 1] - 0.5, 0.0, tf.cast(height - 1, tf.float32))
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
    flat = tf.reshape(images, [shape[0], height * width, shape[3]])
    values_shape = tf.concat([tf.shape(x), shape[3:]], axis=0)

    def at(yy, xx):
        return tf.reshape(tf.gather(flat, tf.reshape(yy * width + xx, [shape[0], -1]), batch_dims=1), values_shape)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def _check_sampling(num_samples: int, threshold: float) -> None:
    if int(num_samples) < 1:
        raise InputError(f"num_samples must be positive, got {num_samples}")
    if not 0.0 <= float(threshold) < 1.0:
        raise InputError(f"threshold must lie in [0, 1), got {threshold}")


@keras.saving.register_keras_serializable(package="tfface")
class PixelSampler(keras.layers.Layer):
    """Keras layer: ``confidence (B, H, W) -> indices (B, P) int32`` (supplement C).

    Each call draws new samples from a seeded generator state (a Keras ``SeedGenerator``
    driving stateless random ops): two samplers built with the same ``seed`` produce the
    same sequence of samples. See :func:`sample_pixels` for the rules, including non-finite
    confidence (counts as 0) and images with fewer than ``num_samples`` pixels (sampled in
    rounds, repeating pixels). Convert to coordinates with :func:`pixel_centres` and read
    maps with :func:`gather_pixels`.

    Args:
        num_samples: Pixels per image, P (10,000 in the paper).
        threshold: Qualifying confidence as a fraction of the image's maximum (0.001 in the paper).
        seed: int, optional. Seed of the generator; ``None`` picks one at random.
    """

    def __init__(self, num_samples: int = 10_000, threshold: float = 0.001, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_sampling(num_samples, threshold)
        self.num_samples = int(num_samples)
        self.threshold = float(threshold)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, confidence):
        return sample_pixels(confidence, self.num_samples, self.threshold, self.seed_generator.next())

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_samples)

    def compute_output_spec(self, confidence):
        return keras.KerasTensor((confidence.shape[0], self.num_samples), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "num_samples": self.num_samples, "threshold": self.threshold, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfface")
class LatticePixelSampler(keras.layers.Layer):
    """Deterministic pixel sampling for inference: ``confidence (B, H, W) -> indices (B, P)``.

    The same ``P`` pixels for every image: flat indices ``floor((k + 1/2) H W / P)``,
    ``k = 0..P-1``, an evenly spread lattice (row-major stride ``H W / P``). With
    ``P >= H W`` every pixel is used (indices repeat cyclically beyond ``H W``). Same call and
    output as :class:`PixelSampler`; a fixed lattice, unlike a random top-k by confidence, gives
    the same samples in every runtime.

    :meth:`sample_weights` makes a fit on the lattice an estimate of the fit on a
    :class:`PixelSampler`'s draws (a training fit): each lattice pixel is weighted by the draws
    that sampler expects there (:func:`expected_draws`) over the lattice's own draws per pixel,
    ``P / (H W)``. Denser lattices then lower the fit's sampling noise without shifting its
    balance of data and priors.

    Args:
        num_samples: Pixels per image, P.
        training_samples: Samples per image of the sampler the weights refer to
            (the training configuration's).
        threshold: That sampler's qualifying threshold (see :func:`sample_pixels`).
    """

    def __init__(self, num_samples: int, training_samples: int, threshold: float = 0.001, **kwargs):
        super().__init__(**kwargs)
        _check_sampling(num_samples, threshold)
        _check_sampling(training_samples, threshold)
        self.num_samples = int(num_samples)
        self.training_samples = int(training_samples)
        self.threshold = float(threshold)

    def lattice(self, height: int, width: int) -> np.ndarray:
        """``(P,)`` int32 flat pixel indices of an ``height x width`` image."""
        pixels = height * width
        if self.num_samples >= pixels:
            return (np.arange(self.num_samples) % pixels).astype(np.int32)
        return np.floor((np.arange(self.num_samples) + 0.5) * pixels / self.num_samples).astype(np.int32)

    def call(self, confidence):
        if confidence.shape[1] is None or confidence.shape[2] is None:
            raise InputError(f"LatticePixelSampler needs a static image size, got {confidence.shape}")
        indices = tf.constant(self.lattice(int(confidence.shape[1]), int(confidence.shape[2])))
        return tf.tile(indices[None], [tf.shape(confidence)[0], 1])

    def sample_weights(self, confidence: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        """``(B, P)`` float32 weight of each sample (see the class docstring).

        Args:
            confidence: ``(B, H, W)`` float. The confidence the samples were drawn from.
            indices: ``(B, P)`` int. This sampler's output for ``confidence``.
        """
        draws = expected_draws(confidence, self.training_samples, self.threshold)
        per_pixel = self.num_samples / float(int(confidence.shape[1]) * int(confidence.shape[2]))
        return tf.gather(draws, indices, batch_dims=1) / per_pixel

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_samples)

    def get_config(self):
        return {**super().get_config(), "num_samples": self.num_samples, "training_samples": self.training_samples,
                "threshold": self.threshold}
