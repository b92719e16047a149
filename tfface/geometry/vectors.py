"""3-vector products written with elementwise ops only.

``tf.linalg.cross`` and ``tf.linalg.det`` have no TFLite built-in kernels (``Cross``,
``MatrixDeterminant``); these component formulas have, so every graph that uses them converts
with ``TFLITE_BUILTINS`` alone.
"""

from __future__ import annotations

import tensorflow as tf


def cross(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Cross product of ``(..., 3)`` vectors (broadcasting), ``(..., 3)``."""
    a0, a1, a2 = tf.unstack(tf.convert_to_tensor(a), axis=-1)
    b0, b1, b2 = tf.unstack(tf.convert_to_tensor(b), axis=-1)
    return tf.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def det3(matrix: tf.Tensor) -> tf.Tensor:
    """Determinant of ``(..., 3, 3)`` matrices as the triple product of their rows, ``(...)``."""
    matrix = tf.convert_to_tensor(matrix)
    return tf.reduce_sum(matrix[..., 0, :] * cross(matrix[..., 1, :], matrix[..., 2, :]), axis=-1)
