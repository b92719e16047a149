"""The texel index map: which triangles a UV correspondence can fall in.

A correspondence ``(u, v)`` falls in texel ``(row, col) = (floor(v S), floor(u S))``. Every texel
lists its *candidate* triangles (those whose closed area meets the closed texel square, found by a
separating-axis test); the containing triangle is the candidate whose smallest barycentric is
largest, so sampling is exact even near triangle edges inside a texel.

The Tutte embedding crowds the rings around filled holes into tiny triangles (up to 159 per texel
near the eyes and mouth of the ICT model at S = 320), so a flat list per texel would make every
lookup pay for the worst texel. Two refinements keep every list short (8 + 2 for ICT) and exact:

* **Quadtree.** A cell with more than ``leaf_size`` candidates is split into 2 x 2 children, down
  to ``max_depth`` levels; a point descends by the bits of ``floor(u S 2^k)``, ``floor(v S 2^k)``.
* **Polar bins.** Around a vertex of valence above ``leaf_size`` (the auxiliary hole-filling
  vertices, valence 42-74 for ICT) no cell can hold fewer triangles than its valence. Such a
  vertex's incident triangles (its *star*) are listed by angle around it instead, in ``num_bins``
  angular sectors; a cell holding part of a star refers to that vertex and the point's angle picks
  the sector.

Candidate lists are conservative (cells grown by a margin, sectors by an angle margin), so rounding
in float32 never loses the containing triangle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tfface.morphable.topology import adjacency

#: Cells are grown by this fraction of their size (and at least :data:`UV_MARGIN` in UV units) in the
#: overlap test, so points on a cell border still find their triangle despite float32 rounding.
CELL_MARGIN = 1e-3
UV_MARGIN = 4e-7

#: Angular sectors are grown by this many radians on each side.
ANGLE_MARGIN = 2e-3


class TexelLocator(NamedTuple):
    """Arrays of the point-location structure (numpy; see the module docstring).

    Attributes:
        children: ``(N, 4)`` int32 child node of every node per quadrant ``2 * row_bit + col_bit``;
            a leaf points to itself. Nodes ``0 .. S*S - 1`` are the texels, row-major.
        candidates: ``(N, C)`` int32 triangles listed at each leaf (padded with ``T``).
        polar: ``(N,)`` int32 polar vertex (index into ``polar_centres``) whose star overlaps the
            leaf, or ``P`` (the padding entry) if none.
        polar_centres: ``(P + 1, 2)`` float32 UV of the polar vertices (padding row last).
        polar_bins: ``(P + 1, num_bins, Cp)`` int32 star triangles per angular sector (padded with T).
        level_scales: ``(D,)`` float32 ``S * 2^(k + 1)`` for the ``D`` quadtree levels below the texels.
    """

    children: np.ndarray
    candidates: np.ndarray
    polar: np.ndarray
    polar_centres: np.ndarray
    polar_bins: np.ndarray
    level_scales: np.ndarray

    @property
    def depth(self) -> int:
        return int(self.level_scales.shape[0])


def _overlaps(tri: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Separating-axis test of triangles ``(M, 3, 2)`` against boxes ``[lo, hi]`` ``(M, 2)``."""
    keep = np.all(tri.max(axis=1) >= lo, axis=1) & np.all(tri.min(axis=1) <= hi, axis=1)
    corners = np.stack([lo, np.stack([hi[:, 0], lo[:, 1]], 1), hi, np.stack([lo[:, 0], hi[:, 1]], 1)], axis=1)
    for k in range(3):
        a, b, c = tri[:, k], tri[:, (k + 1) % 3], tri[:, (k + 2) % 3]
        normal = np.stack([b[:, 1] - a[:, 1], a[:, 0] - b[:, 0]], axis=1)
        side_c = np.einsum("ij,ij->i", c - a, normal)
        box = np.einsum("ikj,ij->ik", corners - a[:, None, :], normal)
        # Separated if every box corner lies strictly on the other side of edge ab than c.
        keep &= ~np.where(side_c >= 0, box.max(axis=1) < 0, box.min(axis=1) > 0)
    return keep


def _cell_pairs(tri_uv: np.ndarray, tri_ids: np.ndarray, cells: np.ndarray, scale: float) -> np.ndarray:
    """Keep the (cell, triangle) pairs that overlap; ``cells`` ``(M, 2)`` (col, row) at ``scale``."""
    margin = max(CELL_MARGIN, UV_MARGIN * scale)
    lo = cells - margin
    return _overlaps(tri_uv[tri_ids] * scale, lo, cells + 1 + margin)


def _polar_bins(uv: np.ndarray, triangles: np.ndarray, apex_of: np.ndarray, polar_vertices: np.ndarray,
                num_bins: int) -> np.ndarray:
    """``(P + 1, num_bins, Cp)`` star triangles of each polar vertex per angular sector."""
    t = len(triangles)
    rows = []
    for p, vertex in enumerate(polar_vertices):
        star = np.flatnonzero(apex_of == p)
        corner = np.argmax(triangles[star] == vertex, axis=1)
        a = uv[triangles[star, (corner + 1) % 3]] - uv[vertex]
        b = uv[triangles[star, (corner + 2) % 3]] - uv[vertex]
        ta, tb = np.arctan2(a[:, 1], a[:, 0]), np.arctan2(b[:, 1], b[:, 0])
        width = np.mod(tb - ta + np.pi, 2 * np.pi) - np.pi
        start = np.where(width >= 0, ta, tb) - ANGLE_MARGIN
        stop = start + np.abs(width) + 2 * ANGLE_MARGIN
        first = np.floor((start / (2 * np.pi) + 0.5) * num_bins).astype(np.int64)
        last = np.floor((stop / (2 * np.pi) + 0.5) * num_bins).astype(np.int64)
        counts = last - first + 1
        tri = np.repeat(star, counts)
        bins = np.mod(np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts), num_bins)
        rows.append((np.full(tri.size, p), bins, tri))
    rows.append((np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)))
    polar_id, bins, tri = (np.concatenate(x) for x in zip(*rows))
    return _pack(polar_id * num_bins + bins, tri, (len(polar_vertices) + 1) * num_bins, t).reshape(
        len(polar_vertices) + 1, num_bins, -1)


def _pack(keys: np.ndarray, values: np.ndarray, num_keys: int, pad: int) -> np.ndarray:
    """``(num_keys, C)`` int32 table listing the values of each key, padded with ``pad``."""
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    count = np.bincount(keys, minlength=num_keys)
    slot = np.arange(keys.size) - np.repeat(np.cumsum(count) - count, count)
    table = np.full((num_keys, max(1, int(count.max(initial=0)))), pad, np.int32)
    table[keys, slot] = values
    return table


def build_locator(vertex_uv: np.ndarray, triangles: np.ndarray, resolution: int, leaf_size: int = 8,
                  max_depth: int = 10, num_bins: int = 128) -> TexelLocator:
    """Build the :class:`TexelLocator` of a mesh embedded in ``[0, 1]^2``.

    Args:
        vertex_uv: ``(V, 2)`` UV coordinates.
        triangles: ``(T, 3)`` int vertex indices.
        resolution: texel grid size S.
        leaf_size: cells with more non-star candidates are split; vertices of higher valence are polar.
        max_depth: deepest quadtree level (a cell that still has more candidates stays a leaf).
        num_bins: angular sectors around each polar vertex.
    """
    uv = np.asarray(vertex_uv, np.float64)
    triangles = np.asarray(triangles, np.int64)
    t, s = len(triangles), resolution
    valence = np.asarray(adjacency(triangles, len(uv)).sum(axis=1)).ravel()
    polar_vertices = np.flatnonzero(valence > leaf_size)
    polar_index = np.full(len(uv), -1)
    polar_index[polar_vertices] = np.arange(polar_vertices.size)
    apex_of = np.full(t, -1)
    for k in range(3):
        free = apex_of < 0
        apex_of[free] = polar_index[triangles[free, k]]
    num_polar = polar_vertices.size
    tri_uv = uv[triangles]

    # Level 0: every (texel, triangle) pair from the triangles' bounding boxes.
    margin = max(CELL_MARGIN, UV_MARGIN * s)
    lo = np.clip(np.floor(tri_uv.min(axis=1) * s - margin), 0, s - 1).astype(np.int64)
    hi = np.clip(np.floor(tri_uv.max(axis=1) * s + margin), 0, s - 1).astype(np.int64)
    extent = hi - lo + 1
    counts = extent[:, 0] * extent[:, 1]
    pair_tri = np.repeat(np.arange(t), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    col = lo[pair_tri, 0] + local % extent[pair_tri, 0]
    row = lo[pair_tri, 1] + local // extent[pair_tri, 0]
    keep = _cell_pairs(tri_uv, pair_tri, np.stack([col, row], 1).astype(np.float64), s)
    pair_node, pair_tri = (row * s + col)[keep], pair_tri[keep]

    cell_xy = [np.stack(np.meshgrid(np.arange(s), np.arange(s)), -1).reshape(-1, 2)]  # (col, row) per node
    children = [np.repeat(np.arange(s * s)[:, None], 4, axis=1)]
    polar = [np.full(s * s, num_polar)]
    leaf_keys, leaf_values = [], []
    level_nodes, first_node, scale, depth = np.arange(s * s), 0, float(s), 0
    num_nodes = s * s
    while level_nodes.size:
        local_node = pair_node - first_node
        # The polar vertex with most star triangles in each cell is handled by angle there.
        starred = apex_of[pair_tri] >= 0
        votes = np.zeros((level_nodes.size, num_polar + 1), np.int64)
        np.add.at(votes, (local_node[starred], apex_of[pair_tri[starred]]), 1)
        votes[:, num_polar] = 0
        chosen = np.where(votes.max(axis=1) > 0, votes.argmax(axis=1), num_polar)
        polar[-1][:] = chosen
        listed = apex_of[pair_tri] != chosen[local_node]
        others = np.bincount(local_node[listed], minlength=level_nodes.size)
        split = (others > leaf_size) & (depth < max_depth)
        is_leaf_pair = ~split[local_node] & listed
        leaf_keys.append(pair_node[is_leaf_pair])
        leaf_values.append(pair_tri[is_leaf_pair])
        split_local = np.flatnonzero(split)
        if split_local.size == 0:
            break
        # Children of the split cells, then the parents' pairs tested against each child.
        new_first = num_nodes
        child_ids = new_first + np.arange(4 * split_local.size).reshape(-1, 4)
        children[-1][split_local] = child_ids
        quadrant = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])  # (col_bit, row_bit) for 2 * row + col
        child_xy = (2 * cell_xy[-1][split_local][:, None, :] + quadrant[None]).reshape(-1, 2)
        parent_of = np.full(level_nodes.size, -1)
        parent_of[split_local] = np.arange(split_local.size)
        from_split = split[local_node]
        p_node, p_tri = parent_of[local_node[from_split]], pair_tri[from_split]
        c_node = (p_node[:, None] * 4 + np.arange(4)).ravel()
        c_tri = np.repeat(p_tri, 4)
        scale *= 2.0
        depth += 1
        keep = _cell_pairs(tri_uv, c_tri, child_xy[c_node].astype(np.float64), scale)
        pair_node, pair_tri = new_first + c_node[keep], c_tri[keep]
        num_nodes += child_ids.size
        level_nodes, first_node = child_ids.ravel(), new_first
        cell_xy.append(child_xy)
        children.append(np.repeat(child_ids.reshape(-1, 1), 4, axis=1))
        polar.append(np.full(child_ids.size, num_polar))
    return TexelLocator(
        children=np.concatenate(children).astype(np.int32),
        candidates=_pack(np.concatenate(leaf_keys), np.concatenate(leaf_values), num_nodes, t),
        polar=np.concatenate(polar).astype(np.int32),
        polar_centres=np.concatenate([uv[polar_vertices], np.full((1, 2), -1.0)]).astype(np.float32),
        polar_bins=_polar_bins(uv, triangles, apex_of, polar_vertices, num_bins),
        level_scales=(s * 2.0 ** np.arange(1, depth + 1)).astype(np.float32),
    )
