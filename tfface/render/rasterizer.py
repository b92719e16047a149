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


def _triangle_table(xy: tf.Tensor, z: tf.Tensor, triangles: tf.Tensor):
    """Per-triangle affine forms of the screen barycentrics and inverse depths.

    With ``d = p - p0`` (``p0`` the first corner), the screen-space barycentrics of a point ``p``
    are ``l1 = a1 . d``, ``l2 = a2 . d``, ``l0 = 1 - l1 - l2``, and ``1 / Z = sum_i l_i / z_i``.

    Args:
        xy: ``(B, V, 2)``; z: ``(B, V)``; triangles: ``(T, 3)``.

    Returns:
        ``(table, area, corners, depths)``: ``(B*T, 9)`` rows ``[x0, y0, a1x, a1y, a2x, a2y,
        1/z0, 1/z1, 1/z2]`` (differentiable), ``(B*T,)`` twice the signed screen area,
        ``(B*T, 3, 2)`` corners and ``(B*T, 3)`` corner depths.
    """
    corners = tf.reshape(tf.gather(xy, triangles, axis=1), [-1, 3, 2])
    depths = tf.reshape(tf.gather(z, triangles, axis=1), [-1, 3])
    x0, y0 = corners[:, 0, 0], corners[:, 0, 1]
    e1x, e1y = corners[:, 1, 0] - x0, corners[:, 1, 1] - y0
    e2x, e2y = corners[:, 2, 0] - x0, corners[:, 2, 1] - y0
    area = e1x * e2y - e1y * e2x
    usable = tf.not_equal(area, 0.0) & tf.reduce_all(depths != 0.0, axis=-1)
    inverse_area = 1.0 / tf.where(usable, area, tf.ones_like(area))
    inverse_depth = 1.0 / tf.where(usable[:, None], depths, tf.ones_like(depths))
    table = tf.concat([
        tf.stack([x0, y0, e2y * inverse_area, -e2x * inverse_area, -e1y * inverse_area, e1x * inverse_area], -1),
        inverse_depth,
    ], axis=-1)
    return table, area, corners, depths


def _evaluate(rows: tf.Tensor, px: tf.Tensor, py: tf.Tensor):
    """Screen barycentrics ``(N, 3)``, perspective-correct barycentrics ``(N, 3)`` and depth ``(N,)``
    of points ``(px, py)`` in the triangles of table ``rows`` ``(N, 9)``."""
    dx, dy = px - rows[:, 0], py - rows[:, 1]
    l1 = rows[:, 2] * dx + rows[:, 3] * dy
    l2 = rows[:, 4] * dx + rows[:, 5] * dy
    screen = tf.stack([1.0 - l1 - l2, l1, l2], axis=-1)
    weighted = screen * rows[:, 6:9]
    inverse_depth = tf.reduce_sum(weighted, axis=-1)
    safe = tf.where(inverse_depth > 0.0, inverse_depth, tf.ones_like(inverse_depth))
    return screen, weighted / safe[:, None], 1.0 / safe


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


def rasterize_screen(xy: tf.Tensor, z: tf.Tensor, triangles: tf.Tensor, height: int, width: int, *, near: float = 1e-3,
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
    table, area, corners, depths = _triangle_table(xy, z, triangles)
    ids = _visible_triangles(tf.stop_gradient(table), area, corners, depths, tf.shape(xy)[0],
                             tf.shape(triangles)[0], height, width, near, cull_backfaces)
    return _fragments(table, ids)


def _visible_triangles(table, area, corners, depths, batch, num_triangles, height, width, near, cull_backfaces):
    """Z-buffer pass (non-differentiable): ``(B, H, W)`` winning triangle ids (-1: none)."""
    corners, depths, area = tf.stop_gradient(corners), tf.stop_gradient(depths), tf.stop_gradient(area)
    valid = tf.reduce_all(depths > near, axis=-1) & tf.math.is_finite(area) & tf.not_equal(area, 0.0)
    valid &= tf.reduce_all(tf.math.is_finite(table), axis=-1)
    if cull_backfaces:
        valid &= area < 0.0  # counter-clockwise from the front is clockwise once y points down

    # Pixel columns i with centre i + 0.5 in [xmin, xmax], clamped to the image (likewise rows).
    safe_corners = tf.where(valid[:, None, None], corners, tf.zeros_like(corners))
    limit = tf.constant([width - 1, height - 1], tf.float32)
    low = tf.clip_by_value(tf.math.ceil(tf.reduce_min(safe_corners, axis=1) - 0.5), 0.0, limit)
    high = tf.clip_by_value(tf.math.floor(tf.reduce_max(safe_corners, axis=1) - 0.5), -1.0, limit)
    extent = tf.where(valid[:, None], tf.maximum(high - low + 1.0, 0.0), tf.zeros_like(low))
    low, extent = tf.cast(low, tf.int32), tf.cast(extent, tf.int32)
    counts = extent[:, 0] * extent[:, 1]  # (B*T,)
    total = tf.reduce_sum(tf.cast(counts, tf.int64))
    with tf.control_dependencies([tf.debugging.assert_less(
            total, tf.constant(2**31 - 1, tf.int64),
            message="rasteriser: the triangles' bounding boxes cover more than 2^31 pixels in total; "
                    "render smaller batches or images")]):
        counts = tf.identity(counts)

    # One candidate per (triangle, pixel of its bounding box): work ~ total bounding-box area.
    starts = tf.cumsum(counts, exclusive=True)
    boxes = tf.stack([starts, extent[:, 0], low[:, 0], low[:, 1]], axis=-1)
    candidate = _repeat_indices(counts, starts)
    box = tf.gather(boxes, candidate)
    offset = tf.range(tf.size(candidate)) - box[:, 0]
    col = box[:, 2] + offset % box[:, 1]
    row = box[:, 3] + offset // box[:, 1]
    screen, _, depth = _evaluate(tf.gather(table, candidate), tf.cast(col, tf.float32) + 0.5,
                                 tf.cast(row, tf.float32) + 0.5)
    inside = tf.reduce_all(screen >= 0.0, axis=-1)

    # Nearest wins; equal depths go to the lower triangle id (depth bits, then id, in one int64).
    depth_bits = tf.cast(tf.bitcast(depth, tf.int32), tf.int64)
    key = tf.bitwise.bitwise_or(tf.bitwise.left_shift(depth_bits, 32), tf.cast(candidate % num_triangles, tf.int64))
    key = tf.where(inside, key, _EMPTY_KEY)
    pixel = ((candidate // num_triangles) * height + row) * width + col
    best = tf.math.unsorted_segment_min(key, pixel, batch * height * width)
    ids = tf.where(tf.not_equal(best, _EMPTY_KEY), tf.cast(tf.bitwise.bitwise_and(best, 0xFFFFFFFF), tf.int32), -1)
    return tf.reshape(ids, [batch, height, width])


def _repeat_indices(counts: tf.Tensor, starts: tf.Tensor) -> tf.Tensor:
    """``i`` repeated ``counts[i]`` times, in O(sum(counts)) (``tf.repeat`` builds a
    ``len(counts) x max(counts)`` mask, which one huge triangle makes enormous).

    ``starts`` is the exclusive cumulative sum of ``counts``: mark where each non-empty run
    begins, and a running count of the marks numbers the runs.
    """
    nonempty = tf.cast(tf.where(counts > 0)[:, 0], tf.int32)
    first = tf.gather(starts, nonempty)
    marks = tf.scatter_nd(first[:, None], tf.ones_like(first), tf.reshape(tf.reduce_sum(counts), [1]))
    return tf.gather(nonempty, tf.cumsum(marks) - 1)


def _covered_pixels(ids: tf.Tensor):
    """Flat indices ``(N,)`` int32 of covered pixels and their image index, row, column, triangle."""
    shape = tf.shape(ids)
    flat = tf.reshape(ids, [-1])
    position = tf.cast(tf.where(flat >= 0)[:, 0], tf.int32)
    pixels_per_image = shape[1] * shape[2]
    within = position % pixels_per_image
    return position, position // pixels_per_image, within // shape[2], within % shape[2], tf.gather(flat, position)


def _fragments(table, ids) -> Fragments:
    """Differentiable barycentrics and depth at the covered pixel centres from the winning triangles."""
    shape = tf.shape(ids)
    num_triangles = tf.shape(table)[0] // shape[0]
    position, image, row, col, triangle = _covered_pixels(ids)
    rows = tf.gather(table, image * num_triangles + triangle)
    _, barycentrics, depth = _evaluate(rows, tf.cast(col, tf.float32) + 0.5, tf.cast(row, tf.float32) + 0.5)
    num_pixels = tf.size(ids)
    scatter_at = position[:, None]
    return Fragments(
        triangle_id=ids,
        barycentrics=tf.reshape(tf.scatter_nd(scatter_at, barycentrics, [num_pixels, 3]),
                                tf.concat([shape, [3]], 0)),
        depth=tf.reshape(tf.scatter_nd(scatter_at, depth, [num_pixels]), shape),
        mask=tf.cast(ids >= 0, tf.float32),
    )


def rasterize(vertices: tf.Tensor, triangles: tf.Tensor, K: tf.Tensor, R: tf.Tensor, t: tf.Tensor, height: int,
              width: int, *, near: float = 1e-3, cull_backfaces: bool = False) -> Fragments:
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


def interpolate(attributes: tf.Tensor, triangles: tf.Tensor, fragments: Fragments) -> tf.Tensor:
    """Blend per-vertex attributes at every pixel with the fragments' barycentrics.

    Only covered pixels are computed (gathered, blended, scattered back).

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
    position, image, _, _, triangle = _covered_pixels(fragments.triangle_id)
    vertex_ids = tf.gather(tf.convert_to_tensor(triangles, tf.int32), triangle)  # (N, 3)
    if attributes.shape.rank == 2:
        values = tf.gather(attributes, vertex_ids)
    else:
        num_vertices = tf.shape(attributes)[1]
        flat = tf.reshape(attributes, [-1, tf.shape(attributes)[2]])
        values = tf.gather(flat, image[:, None] * num_vertices + vertex_ids)  # (N, 3, C)
    weights = tf.gather(tf.reshape(fragments.barycentrics, [-1, 3]), position)
    blended = tf.reduce_sum(values * tf.cast(weights, values.dtype)[..., None], axis=1)
    shape = tf.shape(fragments.triangle_id)
    channels = tf.shape(attributes)[-1]
    out = tf.scatter_nd(position[:, None], blended, tf.stack([tf.size(fragments.triangle_id), channels]))
    return tf.reshape(out, tf.concat([shape, [channels]], 0))
