"""Exact, differentiable sampling of a flattened 3DMM at UV correspondences (pure TensorFlow).

For a correspondence ``(u, v)`` the texel ``(floor(v S), floor(u S))`` (refined by the locator of
:mod:`tfface.morphable.texel_map`) lists the candidate triangles overlapping it; the barycentrics of ``(u, v)`` in every candidate are computed
analytically from the triangle's UV corners and the candidate whose smallest barycentric is
largest (the containing triangle) is kept. The per-vertex rows of the mean and bases of its three
vertices are gathered and blended with those barycentrics, so the result is exact and
differentiable in ``(u, v)``.

Memory layout: each table holds one contiguous row per vertex (``(V, 3 K)`` for a basis, xyz-major),
so the blend is one gather of ``3 B P`` rows reduced over the three corners; under XLA the gather
and the weighted sum fuse into a single pass that writes only the output.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfface.errors import InputError
from tfface.morphable.texel_map import TexelLocator

#: Smallest barycentric accepted for a valid sample (points outside every triangle by more than
#: this are invalid; inside the unit square there is always a containing triangle).
INSIDE_TOLERANCE = 1e-4

#: Position of the padding triangle: far outside the square, so it never wins a texel.
_PAD_ORIGIN = 1e3


class UVSample(NamedTuple):
    """The UV-3DMM sampled at ``B x P`` correspondences.

    Attributes:
        mean: ``(B, P, 3)`` mean shape, mm.
        basis: ``(B, P, 3, Ks + Ke)`` identity modes then expression modes, mm per unit coefficient.
        albedo_mean: ``(B, P, 3)`` mean reflectance.
        albedo_basis: ``(B, P, 3, Kr)`` reflectance modes.
        vertex_ids: ``(B, P, 3)`` int32 vertices of the containing triangle (0 where invalid).
        barycentrics: ``(B, P, 3)`` float32 weights of those vertices (0 where invalid).
        valid: ``(B, P)`` float32, 1 inside the mesh and 0 outside; values there are zeros.
    """

    mean: tf.Tensor
    basis: tf.Tensor
    albedo_mean: tf.Tensor
    albedo_basis: tf.Tensor
    vertex_ids: tf.Tensor
    barycentrics: tf.Tensor
    valid: tf.Tensor


class SamplingTables(NamedTuple):
    """Arrays the sampler reads (numpy or TF), built by :func:`sampling_tables`.

    Attributes:
        locator: the :class:`~tfface.morphable.texel_map.TexelLocator` of the embedding.
        triangles: ``(T + 1, 3)`` int32 vertex ids; the last row is the padding triangle.
        triangle_frames: ``(T + 1, 6)`` float32 per triangle: UV of its first corner ``(2,)`` and
            the row-major inverse ``(2, 2)`` of its edge matrix ``[p1 - p0, p2 - p0]``, so that
            ``(b1, b2) = inverse @ (uv - p0)`` and ``b0 = 1 - b1 - b2``.
        mean: ``(V, 3)`` float32.
        basis: ``(V, 3 * (Ks + Ke))`` float32, per vertex the ``(3, Ks + Ke)`` block, row-major.
        albedo_mean: ``(V, 3)`` float32.
        albedo_basis: ``(V, 3 * Kr)`` float32.
    """

    locator: TexelLocator
    triangles: np.ndarray
    triangle_frames: np.ndarray
    mean: np.ndarray
    basis: np.ndarray
    albedo_mean: np.ndarray
    albedo_basis: np.ndarray


def triangle_frames(vertex_uv: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``(T + 1, 6)`` float32 barycentric frames (see :class:`SamplingTables`), padding row last."""
    p = np.asarray(vertex_uv, np.float64)[np.asarray(triangles)]
    edges = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]], axis=-1)  # (T, 2, 2) columns = edges
    inverse = np.linalg.inv(edges).reshape(-1, 4)
    frames = np.concatenate([p[:, 0], inverse], axis=1)
    pad = np.array([[_PAD_ORIGIN, _PAD_ORIGIN, 1.0, 0.0, 0.0, 1.0]])
    return np.concatenate([frames, pad]).astype(np.float32)


def sampling_tables(vertex_uv: np.ndarray, triangles: np.ndarray, locator: TexelLocator, mean: np.ndarray,
                    shape_basis: np.ndarray, expression_basis: np.ndarray, albedo_mean: np.ndarray,
                    albedo_basis: np.ndarray) -> SamplingTables:
    """Pack a flattened model into :class:`SamplingTables` (bases given as ``(K, V, 3)``)."""
    def rows(*bases: np.ndarray) -> np.ndarray:
        stacked = np.concatenate(bases, axis=0)  # (K, V, 3)
        return np.ascontiguousarray(stacked.transpose(1, 2, 0).reshape(stacked.shape[1], -1), np.float32)

    return SamplingTables(
        locator=locator,
        triangles=np.concatenate([np.asarray(triangles, np.int32), np.zeros((1, 3), np.int32)]),
        triangle_frames=triangle_frames(vertex_uv, triangles),
        mean=np.asarray(mean, np.float32),
        basis=rows(shape_basis, expression_basis),
        albedo_mean=np.asarray(albedo_mean, np.float32),
        albedo_basis=rows(albedo_basis),
    )


def check_uv(uv: tf.Tensor) -> tf.Tensor:
    """``uv`` as a float32 tensor of static rank 3 with last dimension 2, else :class:`InputError`."""
    uv = tf.convert_to_tensor(uv)
    if not uv.dtype.is_floating:
        raise InputError(f"uv must be a float tensor, got {uv.dtype.name}")
    if uv.shape.rank != 3 or uv.shape[-1] != 2:
        raise InputError(f"uv must have shape (B, P, 2), got {uv.shape}")
    return tf.cast(uv, tf.float32)


def locate(uv: tf.Tensor, tables: SamplingTables, resolution: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Containing triangle and barycentrics of every correspondence.

    Args:
        uv: ``(..., 2)`` float32; non-finite values count as outside.
        tables: :class:`SamplingTables` (the locator and ``triangle_frames`` are read).
        resolution: S.

    Returns:
        ``(triangle, barycentrics, valid)``: ``(...)`` int32 triangle ids (``T`` where invalid),
        ``(..., 3)`` float32 barycentrics (zero where invalid) and ``(...)`` bool.
    """
    finite = tf.reduce_all(tf.math.is_finite(uv), axis=-1, keepdims=True)
    uv = tf.where(finite, uv, -tf.ones_like(uv))
    texel_rc = tf.clip_by_value(tf.cast(tf.floor(uv * float(resolution)), tf.int32), 0, resolution - 1)
    node = texel_rc[..., 1] * resolution + texel_rc[..., 0]
    loc = tables.locator
    children = tf.reshape(loc.children, [-1])
    for level in range(loc.level_scales.shape[0]):
        bits = tf.cast(tf.math.floormod(tf.floor(uv * loc.level_scales[level]), 2.0), tf.int32)
        node = tf.gather(children, 4 * node + 2 * bits[..., 1] + bits[..., 0])
    polar = tf.gather(loc.polar, node)
    offset = uv - tf.gather(loc.polar_centres, polar)
    num_bins = loc.polar_bins.shape[1]
    angle = tf.atan2(offset[..., 1], offset[..., 0])
    sector = tf.clip_by_value(tf.cast(tf.floor((angle / (2.0 * np.pi) + 0.5) * num_bins), tf.int32), 0, num_bins - 1)
    polar_bins = tf.reshape(loc.polar_bins, [-1, loc.polar_bins.shape[2]])
    candidates = tf.concat([tf.gather(loc.candidates, node),
                            tf.gather(polar_bins, polar * num_bins + sector)], axis=-1)  # (..., C)
    frame = tf.gather(tables.triangle_frames, candidates)  # (..., C, 6)
    d = uv[..., None, :] - frame[..., 0:2]
    b1 = frame[..., 2] * d[..., 0] + frame[..., 3] * d[..., 1]
    b2 = frame[..., 4] * d[..., 0] + frame[..., 5] * d[..., 1]
    bary = tf.stack([1.0 - b1 - b2, b1, b2], axis=-1)  # (..., C, 3)
    best = tf.argmax(tf.reduce_min(bary, axis=-1), axis=-1, output_type=tf.int32)
    bary = tf.gather(bary, best, batch_dims=uv.shape.rank - 1)
    triangle = tf.gather(candidates, best, batch_dims=uv.shape.rank - 1)
    in_square = tf.reduce_all((uv >= 0.0) & (uv <= 1.0), axis=-1)
    valid = in_square & (tf.reduce_min(bary, axis=-1) >= -INSIDE_TOLERANCE)
    bary = tf.where(valid[..., None], bary, tf.zeros_like(bary))
    triangle = tf.where(valid, triangle, tf.shape(tables.triangle_frames)[0] - 1)
    return triangle, bary, valid


def blend(table: tf.Tensor, vertex_ids: tf.Tensor, barycentrics: tf.Tensor) -> tf.Tensor:
    """``sum_j barycentrics[..., j] * table[vertex_ids[..., j]]``: ``(..., 3)`` ids -> ``(..., R)``.

    Differentiable in ``barycentrics`` only (the table is a constant of the model): the gradient
    is ``d barycentrics[..., j] = table[vertex_ids[..., j]] . d output``, without the costly
    scatter of a gradient into the table.
    """
    table = tf.stop_gradient(table)

    @tf.custom_gradient
    def weighted_rows(weights):
        def gradient(upstream):
            return tf.linalg.matvec(tf.gather(table, vertex_ids), upstream)

        return tf.reduce_sum(weights[..., None] * tf.gather(table, vertex_ids), axis=-2), gradient

    return weighted_rows(barycentrics)


def sample_tables(uv: tf.Tensor, tables: SamplingTables, resolution: int) -> UVSample:
    """Sample the flattened model at ``uv`` ``(B, P, 2)`` (see module docstring); pure TF, not compiled.

    The tables are constants: no gradient flows into them, only into ``uv``.
    """
    tables = tf.nest.map_structure(tf.stop_gradient, tables)
    triangle, bary, valid = locate(uv, tables, resolution)
    ids = tf.gather(tables.triangles, triangle)
    batch = tf.shape(uv)[:-1]
    num_basis = tables.basis.shape[-1] // 3
    num_albedo = tables.albedo_basis.shape[-1] // 3
    return UVSample(
        mean=blend(tables.mean, ids, bary),
        basis=tf.reshape(blend(tables.basis, ids, bary), tf.concat([batch, [3, num_basis]], 0)),
        albedo_mean=blend(tables.albedo_mean, ids, bary),
        albedo_basis=tf.reshape(blend(tables.albedo_basis, ids, bary), tf.concat([batch, [3, num_albedo]], 0)),
        vertex_ids=ids,
        barycentrics=bary,
        valid=tf.cast(valid, tf.float32),
    )


#: :func:`sample_tables` compiled with XLA, which fuses each gather with its barycentric sum.
#: Traced per input signature: the basis width is a static trace constant, so relaxed shapes
#: (``reduce_retracing``) would let tables of another truncation reuse a stale trace; XLA
#: compiles per concrete shape anyway.
sample_tables_compiled = tf.function(sample_tables, jit_compile=True)
