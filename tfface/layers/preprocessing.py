r"""Softplus input preprocessing (supplement E) and its inverse for display.

Dark pixels make the photometric least squares unstable, so input images are lifted smoothly
away from zero: :math:`i' = \log(1 + e^{\xi i}) / \xi` with :math:`\xi = 4`. A black pixel
becomes :math:`\log 2 / \xi \approx 0.173`; bright pixels barely change (``i = 1`` becomes
1.0045). The inverse, :math:`i = \log(e^{\xi i'} - 1) / \xi = i' + \log(1 - e^{-\xi i'}) / \xi`,
maps rendered outputs back to image intensities for display.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfface.errors import InputError

__all__ = [
    "InverseSoftplusPreprocessing",
    "SoftplusPreprocessing",
    "inverse_softplus_preprocess",
    "softplus_preprocess",
]

#: The paper's softplus scale.
XI = 4.0


def softplus_preprocess(images: tf.Tensor, xi: float = XI) -> tf.Tensor:
    """``log(1 + exp(xi * images)) / xi``, elementwise and overflow-free (``tf.nn.softplus``).

    Args:
        images: ``(...)`` float. Intensities, nominally in [0, 1].
        xi: Softplus scale (> 0).

    Returns:
        preprocessed: ``(...)`` , same dtype; always > 0.
    """
    images = tf.convert_to_tensor(images)
    return tf.nn.softplus(xi * images) / xi


def inverse_softplus_preprocess(preprocessed: tf.Tensor, xi: float = XI) -> tf.Tensor:
    """Inverse of :func:`softplus_preprocess`: ``i' + log(-expm1(-xi i')) / xi``.

    Values ``<= 0`` lie outside the range of the forward map; they are clamped to the dtype's
    smallest normal number first, so the result is finite (about ``-22`` for float32 at
    ``xi = 4``, where the true inverse is minus infinity).

    Args:
        preprocessed: ``(...)`` float.
        xi: Softplus scale of the forward map (> 0).

    Returns:
        images: ``(...)``, the dtype of ``preprocessed``.
    """
    preprocessed = tf.convert_to_tensor(preprocessed)
    x = tf.maximum(preprocessed, np.finfo(preprocessed.dtype.as_numpy_dtype).tiny)
    return x + tf.math.log(-tf.math.expm1(-xi * x)) / xi


class _ElementwiseImageLayer(keras.layers.Layer):
    """Shared checks of the two layers: images (B, H, W, 3) float, finite."""

    def __init__(self, xi: float = XI, **kwargs):
        super().__init__(**kwargs)
        if not float(xi) > 0:
            raise InputError(f"xi must be positive, got {xi}")
        self.xi = float(xi)

    def _checked(self, images):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise InputError(f"{type(self).__name__} expects RGB images (B, H, W, 3), got shape {images.shape}")
        if not images.dtype.is_floating:
            raise InputError(f"{type(self).__name__} expects float images in [0, 1], got {images.dtype.name}")
        if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(images))):
            raise InputError(f"{type(self).__name__} got non-finite pixel values (NaN or inf)")
        return tf.where(tf.math.is_finite(images), images, tf.zeros_like(images))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "xi": self.xi}


@keras.saving.register_keras_serializable(package="tfface")
class SoftplusPreprocessing(_ElementwiseImageLayer):
    """Keras layer: RGB images (B, H, W, 3) in [0, 1] -> :func:`softplus_preprocess` (supplement E).

    Raises :class:`~tfface.errors.InputError` for a wrong shape (grey, RGBA), a non-float dtype
    or, in eager mode, non-finite pixels; in graph mode non-finite pixels are treated as black.
    """

    def call(self, images):
        return softplus_preprocess(self._checked(images), self.xi)


@keras.saving.register_keras_serializable(package="tfface")
class InverseSoftplusPreprocessing(_ElementwiseImageLayer):
    """Keras layer: the inverse of :class:`SoftplusPreprocessing`, for display.

    Same input checks; values ``<= 0`` map to a large negative finite number (see
    :func:`inverse_softplus_preprocess`). Clip to [0, 1] before writing an image file.
    """

    def call(self, images):
        return inverse_softplus_preprocess(self._checked(images), self.xi)
