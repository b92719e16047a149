"""Training losses (DESIGN "Training"; supplement F, G, L).

All functions are pure TensorFlow and batched; they return per-image values ``(B,)`` so that the
caller decides on the reduction (``model.fit`` averages over the global batch).
"""

from __future__ import annotations

import tensorflow as tf


def truncated_confidence_loss(residual, confidence, tau, valid=None, soft: bool = False):
    """Confidence-weighted truncated quadratic loss, averaged over the sampled pixels.

    For every sampled pixel ``j`` with residual ``r_j`` and confidence ``omega_j``::

        omega_j * min(|r_j|^2, tau^2) + (1 - omega_j) * tau^2

    A pixel the model cannot explain costs ``tau^2`` whatever its confidence, so raising the
    confidence only pays where the residual is below ``tau``: the face region expands over the
    pixels the 3DMM can explain (supplement L).

    Args:
        residual: ``(B, P, C)`` residuals (mm for geometry, colour for photometry).
        confidence: ``(B, P)`` confidences in [0, 1].
        tau: scalar threshold in the residual's unit.
        valid: optional ``(B, P)`` mask in {0, 1}; invalid samples (correspondence outside the
            UV-3DMM) cost ``tau^2``, as pixels the model cannot explain.
        soft: truncate smoothly, ``tau^2 r^2 / (r^2 + tau^2)`` (Geman-McClure) instead of
            ``min(r^2, tau^2)``: the same bound, but a residual beyond ``tau`` keeps a gradient
            back towards the model.

    Returns:
        ``(B,)`` mean loss per image, in squared residual units.
    """
    residual = tf.convert_to_tensor(residual, tf.float32)
    confidence = tf.cast(confidence, tf.float32)
    tau2 = tf.square(tf.cast(tau, tf.float32))
    squared = tf.reduce_sum(tf.square(residual), axis=-1)
    truncated = tau2 * squared / (squared + tau2) if soft else tf.minimum(squared, tau2)
    if valid is not None:
        valid = tf.cast(valid, tf.float32)
        truncated = valid * truncated + (1.0 - valid) * tau2
    per_pixel = confidence * truncated + (1.0 - confidence) * tau2
    return tf.reduce_mean(per_pixel, axis=-1)


def statistical_loss(coefficients, weights):
    """E_stat: adaptively weighted squared 3DMM coefficients (supplement G).

    Args:
        coefficients: ``(B, K)`` fitted coefficients (N(0, 1) prior).
        weights: ``(K,)`` per-coefficient weights (the adaptive ``omega_i``).

    Returns:
        ``(B,)`` ``sum_i weights_i * coefficients_i^2``.
    """
    coefficients = tf.convert_to_tensor(coefficients, tf.float32)
    return tf.reduce_sum(tf.cast(weights, tf.float32) * tf.square(coefficients), axis=-1)


def translation_weight(step, initial: float, decay_steps: float):
    """Weight of the early camera-translation regulariser at a training step (supplement F).

    ``initial * exp(-step / decay_steps)``: strong at the start of the main training, when
    the camera is ill-determined by near-planar depth, and vanishing later. ``decay_steps <= 0``
    turns the regulariser off.
    """
    if decay_steps <= 0:
        return tf.constant(0.0, tf.float32)
    step = tf.cast(step, tf.float32)
    return tf.cast(initial, tf.float32) * tf.exp(-step / tf.cast(decay_steps, tf.float32))


def pretraining_loss(prediction, target, mask_weight: float = 1.0):
    """Supervised pretraining loss of supplement F, per image.

    The correspondence and depth are supervised inside the face region (target confidence 1),
    both confidences everywhere (binary cross-entropy with the face-region map).

    Args:
        prediction: ``(B, H, W, 5)`` network output (u, v, depth, geometric and photometric
            confidence).
        target: ``(B, H, W, 4)`` target u, v, depth and face-region confidence.
        mask_weight: weight of the confidence term.

    Returns:
        ``(B,)`` loss.
    """
    prediction = tf.cast(prediction, tf.float32)
    target = tf.cast(target, tf.float32)
    face = target[..., 3]
    area = tf.maximum(tf.reduce_sum(face, axis=[1, 2]), 1.0)
    uv_error = tf.reduce_sum(tf.square(prediction[..., 0:2] - target[..., 0:2]), axis=-1)
    depth_error = tf.square(prediction[..., 2] - target[..., 2])
    inside = tf.reduce_sum(face * (uv_error + depth_error), axis=[1, 2]) / area
    eps = 1e-6
    confidence = tf.clip_by_value(prediction[..., 3:5], eps, 1.0 - eps)
    face_c = face[..., None]
    bce = -(face_c * tf.math.log(confidence) + (1.0 - face_c) * tf.math.log(1.0 - confidence))
    return inside + mask_weight * tf.reduce_mean(bce, axis=[1, 2, 3])
