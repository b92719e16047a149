"""Lambertian shading with order-2 spherical-harmonic lighting, and background compositing.

A visible pixel gets ``albedo * (sh_basis(n) @ l)`` per colour channel, where ``albedo`` and the
unit normal ``n`` are interpolated from the vertices with the rasteriser's perspective-correct
barycentrics and ``n`` is expressed in camera space (``n_cam = R n_model``), the frame in which
the photometric least squares evaluates the SH basis.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry.normals import vertex_normals
from tfface.geometry.sh import sh_basis
from tfface.render.rasterizer import Fragments, interpolate, rasterize


class Rendering(NamedTuple):
    """Output of :func:`render`.

    Attributes:
        image: ``(B, H, W, 3)`` float32 in [0, 1], composited over the background.
        fragments: the rasteriser's :class:`~tfface.render.rasterizer.Fragments`.
    """

    image: tf.Tensor
    fragments: Fragments


def shade(fragments: Fragments, triangles: tf.Tensor, albedo: tf.Tensor, normals: tf.Tensor,
          lighting: tf.Tensor) -> tf.Tensor:
    """Shade visible pixels: ``albedo * (sh_basis(n) @ l)``; background pixels are 0.

    Args:
        fragments: rasteriser output for ``(B, H, W)``.
        triangles: ``(T, 3)`` int32, as rasterised.
        albedo: ``(B, V, 3)`` per-vertex reflectance in [0, 1].
        normals: ``(B, V, 3)`` per-vertex unit normals in camera space.
        lighting: ``(B, 9, 3)`` SH coefficients, one column per colour channel.

    Returns:
        ``(B, H, W, 3)`` unclipped radiance.
    """
    lighting = tf.convert_to_tensor(lighting, tf.float32)
    if lighting.shape.rank != 3 or lighting.shape[1:] != (9, 3):
        raise InputError(f"SH lighting must be (B, 9, 3), got {lighting.shape}")
    attributes = tf.concat([tf.convert_to_tensor(albedo, tf.float32), tf.convert_to_tensor(normals, tf.float32)], -1)
    pixels = interpolate(attributes, triangles, fragments)
    pixel_albedo, pixel_normals = pixels[..., :3], tf.math.l2_normalize(pixels[..., 3:], axis=-1)
    shading = tf.einsum("bhwk,bkc->bhwc", sh_basis(pixel_normals), lighting)
    return pixel_albedo * shading * fragments.mask[..., None]


def composite(foreground: tf.Tensor, mask: tf.Tensor, background: tf.Tensor) -> tf.Tensor:
    """``foreground`` where ``mask`` is 1, ``background`` elsewhere, clipped to [0, 1].

    Args:
        foreground, background: ``(B, H, W, 3)``.
        mask: ``(B, H, W)`` in [0, 1].
    """
    mask = tf.convert_to_tensor(mask, tf.float32)[..., None]
    return tf.clip_by_value(foreground * mask + tf.convert_to_tensor(background, tf.float32) * (1.0 - mask), 0.0, 1.0)


def render(vertices: tf.Tensor, triangles: tf.Tensor, albedo: tf.Tensor, K: tf.Tensor, R: tf.Tensor, t: tf.Tensor,
           lighting: tf.Tensor, height: int, width: int, background: tf.Tensor | None = None) -> Rendering:
    """Rasterise and shade model-space meshes.

    Args:
        vertices: ``(B, V, 3)`` model-space positions (mm).
        triangles: ``(T, 3)`` int32, counter-clockwise seen from the front.
        albedo: ``(B, V, 3)`` per-vertex reflectance.
        K, R, t: ``(B, 3, 3)``, ``(B, 3, 3)``, ``(B, 3)`` cameras (``X_cam = R X + t``).
        lighting: ``(B, 9, 3)`` SH coefficients (camera-space normals).
        height, width: image size.
        background: ``(B, H, W, 3)`` or None (black).

    Returns:
        :class:`Rendering`.
    """
    vertices = tf.convert_to_tensor(vertices, tf.float32)
    fragments = rasterize(vertices, triangles, K, R, t, height, width)
    normals = tf.linalg.matmul(vertex_normals(vertices, triangles), tf.convert_to_tensor(R, tf.float32),
                               transpose_b=True)
    foreground = shade(fragments, triangles, albedo, normals, lighting)
    if background is None:
        background = tf.zeros_like(foreground)
    return Rendering(composite(foreground, fragments.mask, background), fragments)
