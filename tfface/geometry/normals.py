"""Area-weighted unit vertex normals of batched triangle meshes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry.vectors import cross

__all__ = ["face_normals", "vertex_normals"]


def face_normals(vertices: tf.Tensor, triangles: tf.Tensor) -> tf.Tensor:
    """Unnormalised triangle normals ``(v1 - v0) x (v2 - v0)``: direction by the right-hand rule
    (counter-clockwise corners face the viewer), length twice the triangle's area.

    Args:
        vertices: ``(B, V, 3)`` float.
        triangles: ``(T, 3)`` int. Vertex indices, shared by the batch.

    Returns:
        normals: ``(B, T, 3)``.
    """
    corners = tf.gather(vertices, triangles, axis=1)  # (B, T, 3, 3)
    return cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])


def vertex_normals(vertices: tf.Tensor, triangles: tf.Tensor) -> tf.Tensor:
    """Unit vertex normals: the normalised sum of the adjacent triangles' area-weighted normals.

    Differentiable in ``vertices``. Degenerate (zero-area) triangles contribute nothing; a
    vertex whose summed normal vanishes (isolated, only degenerate triangles, or cancelling
    neighbours) gets ``(0, 0, 1)``, the model's viewing direction, with zero gradient, so the
    result and its gradient are always finite for finite input.

    Args:
        vertices: ``(B, V, 3)`` float. Vertex positions (mm).
        triangles: ``(T, 3)`` int. Vertex indices, counter-clockwise seen from the front.

    Returns:
        normals: ``(B, V, 3)``. Unit vectors, dtype of ``vertices``.

    Raises:
        InputError: When the shapes are not (B, V, 3) and (T, 3), or (in eager mode) an index is out
            of range.
    """
    vertices = tf.convert_to_tensor(vertices)
    triangles = tf.convert_to_tensor(triangles)
    if vertices.shape.rank != 3 or vertices.shape[-1] != 3:
        raise InputError(f"vertex_normals expects vertices of shape (B, V, 3), got {vertices.shape}")
    if triangles.shape.rank != 2 or triangles.shape[-1] != 3 or triangles.dtype.is_floating:
        raise InputError(f"vertex_normals expects integer triangles of shape (T, 3), got {triangles.shape}")
    num_vertices = tf.shape(vertices)[1]
    if tf.executing_eagerly() and tf.size(triangles) > 0:
        low, high = int(tf.reduce_min(triangles)), int(tf.reduce_max(triangles))
        if low < 0 or high >= int(num_vertices):
            raise InputError(f"triangle indices must lie in [0, {int(num_vertices)}), got [{low}, {high}]")
    per_face = face_normals(vertices, triangles)  # (B, T, 3)
    # Each corner of each triangle receives the triangle's normal: (3T, B, 3) summed per vertex.
    contributions = tf.tile(tf.transpose(per_face, [1, 0, 2]), [3, 1, 1])
    corner_ids = tf.reshape(tf.transpose(triangles), [-1])
    summed = tf.math.unsorted_segment_sum(contributions, corner_ids, num_vertices)  # (V, B, 3)
    summed = tf.transpose(summed, [1, 0, 2])
    squared = tf.reduce_sum(tf.square(summed), axis=-1, keepdims=True)
    usable = squared > np.finfo(vertices.dtype.as_numpy_dtype).tiny
    unit = summed * tf.math.rsqrt(tf.where(usable, squared, tf.ones_like(squared)))
    fallback = tf.constant([0.0, 0.0, 1.0], dtype=vertices.dtype)
    return tf.where(usable, unit, fallback)
