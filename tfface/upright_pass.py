"""The upright pass: fit a face turned in the image's plane again, in its crop turned upright.

The networks fit a face turned in the image's plane as if it were nearly upright: version 17's
landmarks follow the true in-plane angle of AFLW2000-3D faces with slope 0.33 (BUILD.md, "Faces
turned in the picture's plane: the upright pass"). The first fit's roll still says which way the
face leans. The upright pass turns the crop about its centre by minus that roll
(:func:`turn_about_centre`), predicts the maps of the turned crop, turns them back into the
crop's frame (:func:`maps_turned_back`: the correspondence and depth of a pixel do not change
when the image turns about the optical axis, only where the pixel lies) and fits them in the
crop's own frame, so the camera, landmarks and maps of the second fit belong to the crop as
given (:meth:`tfface.model.FaceModel.inference_fit`). The pixels the turned crop does not cover
get confidence 0.

Angles are radians, positive turning the image's content counter-clockwise on screen (x right,
y down), as the roll of :func:`camera_roll` and of :func:`tfface.io.records.head_pose_degrees`:
the crop of a face of roll ``r`` is turned upright by ``-r``.
"""

from __future__ import annotations

import tensorflow as tf

from tfface.errors import InputError
from tfface.layers.pixel_sampling import bilinear_sample


def camera_roll(rotation: tf.Tensor) -> tf.Tensor:
    """In-plane angle of a fit's camera rotation.

    Args:
        rotation: ``(B, 3, 3)`` camera rotations ``R`` (model to camera space).

    Returns:
        ``(B,)`` roll in radians: ``atan2(M[1, 0], M[0, 0])`` of ``M = diag(1, -1, -1) R`` (the
        rotation relative to a frontal, upright face's ``diag(1, -1, -1)``), the roll of
        :func:`tfface.io.records.head_pose_degrees`; positive where the face is turned
        counter-clockwise on screen (its model x axis, the viewer's right, points up).
    """
    rotation = tf.convert_to_tensor(rotation, tf.float32)
    return tf.math.atan2(-rotation[:, 1, 0], rotation[:, 0, 0])


def source_pixels(angle: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Where each pixel of an image turned by ``angle`` about its centre finds its source.

    Args:
        angle: ``(B,)`` radians.
        height, width: image size in pixels (static).

    Returns:
        ``(B, height, width, 2)`` source positions (x, y; pixel centres at +0.5): pixel ``p``
        of the turned image shows the source at ``c + Rot(angle) (p - c)``, ``c`` the centre and
        ``Rot(a) = [[cos a, -sin a], [sin a, cos a]]``, so a source point ``s`` shows at
        ``c + Rot(-angle) (s - c)``: turned counter-clockwise on screen.
    """
    angle = tf.cast(angle, tf.float32)
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32) + 0.5, tf.range(width, dtype=tf.float32) + 0.5,
                         indexing="ij")
    dx, dy = xs - 0.5 * width, ys - 0.5 * height  # (H, W) about the centre
    cos, sin = (tf.reshape(f(angle), [-1, 1, 1]) for f in (tf.cos, tf.sin))
    return tf.stack([cos * dx - sin * dy + 0.5 * width, sin * dx + cos * dy + 0.5 * height], axis=-1)


def _static_size(images: tf.Tensor) -> tuple[int, int]:
    """Height and width of ``(B, H, W, C)`` images; static sizes keep TFLite's shapes static."""
    if images.shape.rank != 4 or images.shape[1] is None or images.shape[2] is None:
        raise InputError(f"images must be (B, H, W, C) of static height and width, got {images.shape}")
    return int(images.shape[1]), int(images.shape[2])


def turn_about_centre(images: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """``(B, H, W, C)`` images turned by ``(B,)`` ``angle`` (radians) about their centres.

    Bilinear (:func:`~tfface.layers.pixel_sampling.bilinear_sample`); a pixel whose source lies
    outside the image takes the nearest edge pixel. An angle of 0 returns the images.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    height, width = _static_size(images)
    return bilinear_sample(images, source_pixels(angle, height, width))


def maps_turned_back(maps: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """The maps of images turned by ``angle``, as maps of the images themselves.

    Args:
        maps: ``(B, H, W, 5)`` u, v, depth, geometric and photometric confidence predicted for
            the images turned by ``angle`` (:func:`turn_about_centre`).
        angle: ``(B,)`` radians, the angle the images were turned by.

    Returns:
        ``(B, H, W, 5)``: the maps turned by ``-angle``, with both confidences 0 where the turned
        images did not cover the image (their corners).
    """
    maps = tf.convert_to_tensor(maps, tf.float32)
    height, width = _static_size(maps)
    source = source_pixels(-tf.cast(angle, tf.float32), height, width)
    covered = tf.reduce_all((source >= 0.0) & (source <= tf.constant([width, height], tf.float32)), axis=-1)
    turned = bilinear_sample(maps, source)
    return tf.concat([turned[..., 0:3], turned[..., 3:5] * tf.cast(covered, tf.float32)[..., None]], axis=-1)
