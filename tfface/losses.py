"""Training losses (DESIGN "Training"; supplement F, G, L).

All functions are pure TensorFlow and batched; they return per-image values ``(B,)`` so that the
caller decides on the reduction (``model.fit`` averages over the global batch).
"""

from __future__ import annotations

import tensorflow as tf

from tfface.data.augment import coverage, warp_images


def truncated_confidence_loss(residual: tf.Tensor, confidence: tf.Tensor, tau: float, valid: tf.Tensor | None = None,
                              soft: bool = False) -> tf.Tensor:
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


def statistical_loss(coefficients: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """E_stat: adaptively weighted squared 3DMM coefficients (supplement G).

    Args:
        coefficients: ``(B, K)`` fitted coefficients (N(0, 1) prior).
        weights: ``(K,)`` per-coefficient weights (the adaptive ``omega_i``).

    Returns:
        ``(B,)`` ``sum_i weights_i * coefficients_i^2``.
    """
    coefficients = tf.convert_to_tensor(coefficients, tf.float32)
    return tf.reduce_sum(tf.cast(weights, tf.float32) * tf.square(coefficients), axis=-1)


def translation_weight(step: int | tf.Tensor, initial: float, decay_steps: float) -> tf.Tensor:
    """Weight of the early camera-translation regulariser at a training step (supplement F).

    ``initial * exp(-step / decay_steps)``: strong at the start of the main training, when
    the camera is ill-determined by near-planar depth, and vanishing later. ``decay_steps <= 0``
    turns the regulariser off.
    """
    if decay_steps <= 0:
        return tf.constant(0.0, tf.float32)
    step = tf.cast(step, tf.float32)
    return tf.cast(initial, tf.float32) * tf.exp(-step / tf.cast(decay_steps, tf.float32))


def pretraining_loss(prediction: tf.Tensor, target: tf.Tensor, mask_weight: float = 1.0,
                     depth_weight: float = 1.0) -> tf.Tensor:
    """Supervised pretraining loss of supplement F, per image.

    The correspondence and depth are supervised inside the face region (target confidence 1),
    both confidences everywhere (binary cross-entropy with the face-region map)::

        sum_p f_p (|uv_p - uv*_p|^2 + depth_weight (d_p - d*_p)^2) / sum_p f_p + mask_weight BCE

    Args:
        prediction: ``(B, H, W, 5)`` network output (u, v, depth, geometric and photometric
            confidence).
        target: ``(B, H, W, 4)`` target u, v, depth and face-region confidence.
        mask_weight: weight of the confidence term.
        depth_weight: weight of the squared depth error against the squared UV error (the depth
            varies over a face about six times less than u).

    Returns:
        ``(B,)`` loss.
    """
    prediction = tf.cast(prediction, tf.float32)
    target = tf.cast(target, tf.float32)
    face = target[..., 3]
    area = tf.maximum(tf.reduce_sum(face, axis=[1, 2]), 1.0)
    uv_error = tf.reduce_sum(tf.square(prediction[..., 0:2] - target[..., 0:2]), axis=-1)
    depth_error = tf.square(prediction[..., 2] - target[..., 2])
    inside = tf.reduce_sum(face * (uv_error + depth_weight * depth_error), axis=[1, 2]) / area
    eps = 1e-6
    confidence = tf.clip_by_value(prediction[..., 3:5], eps, 1.0 - eps)
    face_c = face[..., None]
    bce = -(face_c * tf.math.log(confidence) + (1.0 - face_c) * tf.math.log(1.0 - confidence))
    return inside + mask_weight * tf.reduce_mean(bce, axis=[1, 2, 3])


def equivariance_loss(maps_of_warped: tf.Tensor, maps: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Equivariance of the correspondence under a known 2D similarity, per image.

    A face point keeps its UV coordinate wherever the image moves it: the maps of a warped image
    must equal the warped maps of the image. Landmark-free (the transforms are drawn, not
    annotated), it penalises a network that places one canonical face wherever the face is (Thewlis
    et al., ICCV 2017, use the same constraint to learn landmarks without labels). The UV error
    is weighted by both maps' joint confidence (held fixed: the other losses decide the face
    region), over the output pixels the warp covers::

        sum_p w_p |uv'(p) - uv(A^-1 p)|^2 / sum_p w_p,   w_p = c'(p) c(A^-1 p) [p covered]

    Args:
        maps_of_warped: ``(B, H, W, 5)`` network output on the warped images.
        maps: ``(B, H, W, 5)`` network output on the images.
        transforms: ``(B, 3, 3)`` forward similarities (pixels) that made the warped images
            (:func:`tfface.data.augment.warp_images`).

    Returns:
        ``(B,)`` loss (squared UV units).
    """
    maps_of_warped, maps = tf.cast(maps_of_warped, tf.float32), tf.cast(maps, tf.float32)
    warped = warp_images(maps, transforms)
    covered = tf.cast(coverage(transforms, maps.shape[1], maps.shape[2]) > 0.999, tf.float32)
    weight = tf.stop_gradient(maps_of_warped[..., 3] * maps_of_warped[..., 4] * warped[..., 3] * warped[..., 4]) * covered
    error = tf.reduce_sum(tf.square(maps_of_warped[..., 0:2] - warped[..., 0:2]), axis=-1)
    return tf.reduce_sum(weight * error, axis=[1, 2]) / tf.maximum(tf.reduce_sum(weight, axis=[1, 2]), 1.0)
