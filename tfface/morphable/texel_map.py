"""The texel index map: for every texel of an S x S grid, the triangles that overlap it.

A correspondence ``(u, v)`` falls in texel ``(row, col) = (floor(v S), floor(u S))``; the triangle
containing it is one of that texel's candidates (the triangles whose closed area meets the closed
texel square), so sampling is exact even near triangle edges inside a texel.
"""

from __future__ import annotations

import numpy as np

#: Texels are enlarged by this fraction of their size in the overlap test, so points on a texel
#: border still find their triangle despite rounding.
TEXEL_MARGIN = 1e-3


def _overlaps(tri: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Separating-axis test of triangles ``(M, 3, 2)`` against boxes ``[lo, hi]`` ``(M, 2)``.

    The box axes are covered by the bounding-box enumeration; this tests the three edge normals.
    """
    corners = np.stack([lo, np.stack([hi[:, 0], lo[:, 1]], 1), hi, np.stack([lo[:, 0], hi[:, 1]], 1)], axis=1)
    keep = np.ones(len(tri), bool)
    for k in range(3):
        a, b, c = tri[:, k], tri[:, (k + 1) % 3], tri[:, (k + 2) % 3]
        normal = np.stack([b[:, 1] - a[:, 1], a[:, 0] - b[:, 0]], axis=1)
        side_c = np.einsum("ij,ij->i", c - a, normal)
        box = np.einsum("ikj,ij->ik", corners - a[:, None, :], normal)
        # Separated if every box corner lies strictly on the other side of edge ab than c.
        separated = np.where(side_c >= 0, box.max(axis=1) < 0, box.min(axis=1) > 0)
        keep &= ~separated
    return keep


def texel_candidates(vertex_uv: np.ndarray, triangles: np.ndarray, resolution: int) -> np.ndarray:
    """Candidate triangles of every texel.

    Args:
        vertex_uv: ``(V, 2)`` UV coordinates in ``[0, 1]^2``.
        triangles: ``(T, 3)`` int vertex indices.
        resolution: grid size S.

    Returns:
        ``(S * S, C)`` int32; row ``row * S + col`` lists the triangles overlapping that texel,
        padded with ``T`` (one past the last triangle). C is the largest number of overlaps.
    """
    s = resolution
    tri = np.asarray(vertex_uv, np.float64)[np.asarray(triangles)] * s  # texel units
    lo = np.clip(np.floor(tri.min(axis=1) - TEXEL_MARGIN), 0, s - 1).astype(np.int64)
    hi = np.clip(np.floor(tri.max(axis=1) + TEXEL_MARGIN), 0, s - 1).astype(np.int64)
    extent = hi - lo + 1
    counts = extent[:, 0] * extent[:, 1]
    tri_id = np.repeat(np.arange(len(tri)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    col = lo[tri_id, 0] + local % extent[tri_id, 0]
    row = lo[tri_id, 1] + local // extent[tri_id, 0]
    box_lo = np.stack([col, row], axis=1) - TEXEL_MARGIN
    keep = _overlaps(tri[tri_id], box_lo, box_lo + 1 + 2 * TEXEL_MARGIN)
    texel, tri_id = (row * s + col)[keep], tri_id[keep]
    order = np.argsort(texel, kind="stable")
    texel, tri_id = texel[order], tri_id[order]
    per_texel = np.bincount(texel, minlength=s * s)
    slot = np.arange(texel.size) - np.repeat(np.cumsum(per_texel) - per_texel, per_texel)
    table = np.full((s * s, int(per_texel.max())), len(tri), np.int32)
    table[texel, slot] = tri_id
    return table
