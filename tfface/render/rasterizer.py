"""A batched z-buffer triangle rasteriser in pure TensorFlow.

No OpenGL: the rasteriser enumerates, for every triangle, the pixel centres inside its screen
bounding box (work proportional to the total bounding-box area, so triangles of any size are
handled exactly), keeps those inside the triangle, and resolves visibility with a z-buffer built
by ``tf.math.unsorted_segment_min`` over one int64 key per candidate (depth bits, then triangle
id, so equal depths are won by the lowest triangle id).

Pixel convention (DESIGN.md): x right, y down, pixel ``(col i, row j)`` has its centre at
``(i + 0.5, j + 0.5)``. A pixel is covered by a triangle when its centre lies inside or on the
boundary of the triangle's projection.

Differentiability: which triangle wins a pixel is piecewise constant (no gradient); the
barycentrics and depth of :class:`Fragments` are recomputed from the winning triangle's vertices
with differentiable ops, so gradients flow to the vertex positions (as in most differentiable
rasterisers, silhouette/occlusion changes are not differentiated).

Clipping: triangles with a vertex at depth ``<= near`` are dropped whole (no near-plane
clipping). Back-face culling is optional (``cull_backfaces``); a closed or hole-filled face
mesh renders correctly without it because the z-buffer resolves self-occlusion.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry import camera

#: Key of a pixel no triangle covers (the identity of ``unsorted_segment_min`` on int64).
_EMPTY_KEY = tf.int64.max


class Fragments(NamedTuple):
    """What the rasteriser knows about every pixel.

    Attributes:
        triangle_id: ``(B, H, W)`` int32 index of the visible triangle, -1 for background.
        barycentrics: ``(B, H, W, 3)`` float32 perspective-correct barycentric coordinates of the
            pixel centre in the visible triangle (weights of its 3 vertices, summing to 1);
            zeros for background. Differentiable in the vertex positions.
        depth: ``(B, H, W)`` float32 camera-space depth Z of the visible surface at the pixel
            centre (same units as the vertices); 0 for background. Differentiable.
        mask: ``(B, H, W)`` float32, 1 where a triangle is visible, else 0.
    """

    triangle_id: tf.Tensor
    barycentrics: tf.Tensor
    depth: tf.Tensor
    mask: tf.Tensor


def _edge(a: tf.Tensor, b: tf.Tensor, px: tf.Tensor, py: tf.Tensor) -> tf.Tensor:
    """Edge function ``(b - a) x (p - a)``; ``a``, ``b`` are ``(..., 2)``, ``px``, ``py`` ``(...)``."""
    return (b[..., 0] - a[..., 0]) * (py - a[..., 1]) - (b[..., 1] - a[..., 1]) * (px - a[..., 0])


def _screen_barycentrics(corners: tf.Tensor, depths: tf.Tensor, px: tf.Tensor, py: tf.Tensor):
    """Screen-space and perspective-correct barycentrics of points in triangles.

    Args:
        corners: ``(..., 3, 2)`` projected triangle corners in pixels.
        depths: ``(..., 3)`` corner depths (> 0).
        px, py: ``(...)`` query point.

    Returns:
        ``(screen, perspective, depth)``: ``(..., 3)`` screen-space barycentrics (negative outside),
        ``(..., 3)`` perspective-correct barycentrics and ``(...)`` interpolated depth.
    """
    p0, p1, p2 = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    area = _edge(p0, p1, p2[..., 0], p2[..., 1])
    safe_area = tf.where(tf.equal(area, 0.0), tf.ones_like(area), area)
    screen = tf.stack([_edge(p1, p2, px, py), _edge(p2, p0, px, py), _edge(p0, p1, px, py)], axis=-1)
    screen = screen / safe_area[..., None]
    weighted = screen / depths
    inverse_depth = tf.reduce_sum(weighted, axis=-1)
    safe_inverse = tf.where(tf.equal(inverse_depth, 0.0), tf.ones_like(inverse_depth), inverse_depth)
    return screen, weighted / safe_inverse[..., None], 1.0 / safe_inverse


def _check_inputs(xy: tf.Tensor, z: tf.Tensor, triangles: tf.Tensor, height: int, width: int) -> None:
    if xy.shape.rank != 3 or xy.shape[-1] != 2:
        raise InputError(f"projected vertices must be (B, V, 2), got {xy.shape}")
    if z.shape.rank != 2 or (z.shape[0] is not None and xy.shape[0] is not None and z.shape[0] != xy.shape[0]) \
            or (z.shape[1] is not None and xy.shape[1] is not None and z.shape[1] != xy.shape[1]):
        raise InputError(f"vertex depths must be (B, V) matching {xy.shape[:2]}, got {z.shape}")
    if triangles.shape.rank != 2 or triangles.shape[-1] != 3:
        raise InputError(f"triangles must be (T, 3), got {triangles.shape}")
    if int(height) <= 0 or int(width) <= 0:
        raise InputError(f"image size must be positive, got {height}x{width}")


def rasterize_screen(xy, z, triangles, height: int, width: int, *, near: float = 1e-3,
                     cull_backfaces: bool = False) -> Fragments:
    """Rasterise triangles given their projected vertices.

    Args:
        xy: ``(B, V, 2)`` float32 projected vertex positions in pixels (x right, y down).
        z: ``(B, V)`` float32 camera-space depth of each vertex (> ``near`` to be drawn).
        triangles: ``(T, 3)`` int32 vertex indices (shared by the batch).
        height, width: output image size in pixels.
        near: triangles with any vertex at depth ``<= near`` are not drawn.
        cull_backfaces: drop triangles whose projection is clockwise on screen, i.e. triangles
            that are counter-clockwise from the front (model convention) and seen from behind.

    Returns:
        :class:`Fragments` with ``(B, height, width)`` maps.
    """
    xy = tf.convert_to_tensor(xy, tf.float32)
    z = tf.convert_to_tensor(z, tf.float32)
    triangles = tf.convert_to_tensor(triangles, tf.int32)
    _check_inputs(xy, z, triangles, height, width)
    height, width = int(height), int(width)
    ids = _visible_triangles(tf.stop_gradient(xy), tf.stop_gradient(z), triangles,
                             height, width, near, cull_backfaces)
    return _fragments(xy, z, triangles, ids)


def _visible_triangles(xy, z, triangles, height, width, near, cull_backfaces):
    """Z-buffer pass (non-differentiable): ``(B, H, W)`` winning triangle ids (-1: none)."""
    batch = tf.shape(xy)[0]
    num_triangles = tf.shape(triangles)[0]
    corners = tf.gather(xy, triangles, axis=1)  # (B, T, 3, 2)
    corner_depths = tf.gather(z, triangles, axis=1)  # (B, T, 3)
    p0, p1, p2 = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    area = _edge(p0, p1, p2[..., 0], p2[..., 1])
    valid = tf.reduce_all(corner_depths > near, axis=-1) & tf.math.is_finite(area) & tf.not_equal(area, 0.0)
    valid &= tf.reduce_all(tf.math.is_finite(corners), axis=[-1, -2])
    if cull_backfaces:
        valid &= area < 0.0  # counter-clockwise from the front is clockwise once y points down

    # Pixel columns i with centre i + 0.5 in [xmin, xmax], clamped to the image (likewise rows).
    safe_corners = tf.where(valid[..., None, None], corners, tf.zeros_like(corners))
    low = tf.math.ceil(tf.reduce_min(safe_corners, axis=-2) - 0.5)
    high = tf.math.floor(tf.reduce_max(safe_corners, axis=-2) - 0.5)
    limit = tf.constant([width - 1, height - 1], tf.float32)
    low = tf.clip_by_value(low, 0.0, limit)
    high = tf.clip_by_value(high, -1.0, limit)
    extent = tf.maximum(high - low + 1.0, 0.0)
    extent = tf.where(valid[..., None], extent, tf.zeros_like(extent))
    low = tf.cast(low, tf.int32)
    extent = tf.cast(extent, tf.int32)
    counts = tf.reshape(extent[..., 0] * extent[..., 1], [-1])  # (B*T,)

    # One candidate per (triangle, pixel in its bounding box).
    total = tf.reduce_sum(counts)
    candidate = tf.repeat(tf.range(tf.size(counts)), counts)
    starts = tf.cumsum(counts, exclusive=True)
    offset = tf.range(total) - tf.gather(starts, candidate)
    box_width = tf.gather(tf.reshape(extent[..., 0], [-1]), candidate)
    box_low = tf.gather(tf.reshape(low, [-1, 2]), candidate)
    col = box_low[:, 0] + offset % box_width
    row = box_low[:, 1] + offset // box_width
    px = tf.cast(col, tf.float32) + 0.5
    py = tf.cast(row, tf.float32) + 0.5

    flat_corners = tf.gather(tf.reshape(corners, [-1, 3, 2]), candidate)
    flat_depths = tf.gather(tf.reshape(corner_depths, [-1, 3]), candidate)
    screen, _, depth = _screen_barycentrics(flat_corners, flat_depths, px, py)
    inside = tf.reduce_all(screen >= 0.0, axis=-1) & (depth > 0.0)

    image_index = candidate // num_triangles
    triangle_index = candidate % num_triangles
    pixel = (image_index * height + row) * width + col
    depth_bits = tf.cast(tf.bitcast(tf.boolean_mask(depth, inside), tf.int32), tf.int64)
    key = tf.bitwise.bitwise_or(tf.bitwise.left_shift(depth_bits, 32),
                                tf.cast(tf.boolean_mask(triangle_index, inside), tf.int64))
    num_pixels = batch * height * width
    best = tf.math.unsorted_segment_min(key, tf.boolean_mask(pixel, inside), num_pixels)
    covered = tf.not_equal(best, _EMPTY_KEY)
    ids = tf.where(covered, tf.cast(tf.bitwise.bitwise_and(best, 0xFFFFFFFF), tf.int32), -1)
    return tf.reshape(ids, [batch, height, width])


def _fragments(xy, z, triangles, ids) -> Fragments:
    """Differentiable barycentrics and depth at every pixel centre from the winning triangles."""
    shape = tf.shape(ids)
    height, width = shape[1], shape[2]
    covered = ids >= 0
    vertex_ids = tf.gather(triangles, tf.maximum(ids, 0))  # (B, H, W, 3)
    corners = tf.gather(xy, vertex_ids, batch_dims=1)  # (B, H, W, 3, 2)
    depths = tf.gather(z, vertex_ids, batch_dims=1)  # (B, H, W, 3)
    px = tf.cast(tf.range(width), tf.float32) + 0.5
    py = tf.cast(tf.range(height), tf.float32) + 0.5
    px = tf.broadcast_to(px[None, None, :], shape)
    py = tf.broadcast_to(py[None, :, None], shape)
    safe_depths = tf.where(covered[..., None], depths, tf.ones_like(depths))
    _, barycentrics, depth = _screen_barycentrics(corners, safe_depths, px, py)
    mask = tf.cast(covered, tf.float32)
    return Fragments(
        triangle_id=ids,
        barycentrics=barycentrics * mask[..., None],
        depth=depth * mask,
        mask=mask,
    )


def rasterize(vertices, triangles, K, R, t, height: int, width: int, *, near: float = 1e-3,
              cull_backfaces: bool = False) -> Fragments:
    """Rasterise model-space triangle meshes seen by pinhole cameras.

    Args:
        vertices: ``(B, V, 3)`` float32 model-space positions (mm).
        triangles: ``(T, 3)`` int32 vertex indices.
        K: ``(B, 3, 3)`` intrinsics; R: ``(B, 3, 3)`` rotations; t: ``(B, 3)`` translations, so that
            ``X_cam = R X + t`` and pixel ``= K X_cam / Z`` (:func:`tfface.geometry.camera.project`).
            For camera-space vertices pass ``R = I``, ``t = 0``.
        height, width: output size in pixels.
        near, cull_backfaces: see :func:`rasterize_screen`.

    Returns:
        :class:`Fragments`; ``depth`` is the camera-space Z of the visible surface.
    """
    vertices = tf.convert_to_tensor(vertices, tf.float32)
    if vertices.shape.rank != 3 or vertices.shape[-1] != 3:
        raise InputError(f"vertices must be (B, V, 3), got {vertices.shape}")
    K, R, t = (tf.convert_to_tensor(a, tf.float32) for a in (K, R, t))
    if K.shape.rank != 3 or K.shape[-2:] != (3, 3) or R.shape.rank != 3 or R.shape[-2:] != (3, 3) \
            or t.shape.rank != 2 or t.shape[-1] != 3:
        raise InputError(f"camera must be K (B, 3, 3), R (B, 3, 3), t (B, 3); got {K.shape}, {R.shape}, {t.shape}")
    xy, depth = camera.project(vertices, K, R, t)
    return rasterize_screen(xy, depth, triangles, height, width, near=near, cull_backfaces=cull_backfaces)


def interpolate(attributes, triangles, fragments: Fragments) -> tf.Tensor:
    """Blend per-vertex attributes at every pixel with the fragments' barycentrics.

    Args:
        attributes: ``(B, V, C)`` or ``(V, C)`` per-vertex values.
        triangles: ``(T, 3)`` int32, as rasterised.
        fragments: output of :func:`rasterize` / :func:`rasterize_screen`.

    Returns:
        ``(B, H, W, C)`` interpolated values, zero on background pixels.
    """
    attributes = tf.convert_to_tensor(attributes)
    if attributes.shape.rank not in (2, 3):
        raise InputError(f"attributes must be (B, V, C) or (V, C), got {attributes.shape}")
    vertex_ids = tf.gather(tf.convert_to_tensor(triangles, tf.int32), tf.maximum(fragments.triangle_id, 0))
    if attributes.shape.rank == 2:
        values = tf.gather(attributes, vertex_ids)
    else:
        values = tf.gather(attributes, vertex_ids, batch_dims=1)  # (B, H, W, 3, C)
    weights = tf.cast(fragments.barycentrics, values.dtype)
    return tf.reduce_sum(values * weights[..., None], axis=-2)
