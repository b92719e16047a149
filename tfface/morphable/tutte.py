"""Tutte embedding of a disk-topology mesh onto the unit square (supplement A).

The outer boundary loop is mapped onto the perimeter of ``[0, 1]^2``: four well-spread boundary
vertices go to the corners and the others are spaced by arc length along each side. Every interior
vertex is placed at the average of its neighbours (uniform Tutte weights), a sparse linear solve.
By Tutte's and Floater's theorems the map is bijective when the boundary polygon is convex and no
interior edge joins two vertices of the same straight side (a "dividing edge"); the corners are
chosen so that no such edge exists, and the result is checked.

UV orientation: ``u`` grows with model ``x`` (to the viewer's right) and ``v`` grows with ``-y``
(downwards), so that the texel image (row = ``floor(v S)``) shows the face upright. Triangles that
are counter-clockwise in front view therefore have negative signed area in the ``(u, v)`` frame.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from tfface.errors import SolveError
from tfface.morphable.topology import adjacency, directed_edges

#: Directions in model (x, y) of the corners (u, v) = (0, 0), (0, 1), (1, 1), (1, 0): top-left,
#: bottom-left, bottom-right, top-right. This is their order along a counter-clockwise boundary.
CORNER_DIRECTIONS = np.array([[-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [1.0, 1.0]])
CORNER_UV = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])


def signed_areas(uv: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``(T,)`` float64 signed areas of the triangles in the ``(u, v)`` frame (counter-clockwise > 0)."""
    p = np.asarray(uv, np.float64)[np.asarray(triangles)]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def _dividing_edges(corners: np.ndarray, chords: np.ndarray, position: np.ndarray, length: int) -> int:
    """Number of chords whose two ends lie on the same closed side of the square.

    ``position[v]`` is the index of boundary vertex ``v`` along the loop; ``corners`` the four
    corner indices along the loop (cyclically increasing).
    """
    if chords.size == 0:
        return 0
    start = corners[:, None]
    span = (np.roll(corners, -1) - corners)[:, None] % length
    ends = [(position[chords[:, k]][None, :] - start) % length <= span for k in (0, 1)]
    return int(np.sum(np.any(ends[0] & ends[1], axis=0)))


def choose_corners(points: np.ndarray, loop: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Indices into ``loop`` of the four corner vertices (top-left, bottom-left, bottom-right, top-right).

    Each corner starts at the boundary vertex farthest in its diagonal direction (model x, y) and is
    then moved along the boundary (one corner at a time, nearest shifts first), if needed, so that no
    interior edge joins two vertices of one side.

    Raises:
        SolveError: if no choice of corners avoids dividing edges.
    """
    xy = points[loop, :2] - points[loop, :2].mean(axis=0)
    n = loop.size
    corners = np.array([int(np.argmax(xy @ d)) for d in CORNER_DIRECTIONS])
    corners = corners[np.argsort((corners - corners[0]) % n)]
    if np.unique(corners).size < 4 or not np.all(np.diff((corners - corners[0]) % n) > 0):
        corners = (np.arange(4) * n) // 4
    position = np.full(int(max(points.shape[0], triangles.max() + 1)), -1)
    position[loop] = np.arange(n)
    edges = directed_edges(triangles)
    on_boundary = (position[edges[:, 0]] >= 0) & (position[edges[:, 1]] >= 0)
    boundary_edge = (position[edges[:, 1]] - position[edges[:, 0]]) % n == 1
    back = (position[edges[:, 0]] - position[edges[:, 1]]) % n == 1
    chords = edges[on_boundary & ~boundary_edge & ~back]
    chords = np.unique(np.sort(chords, axis=1), axis=0)
    best = _dividing_edges(corners, chords, position, n)
    radius = max(1, n // 4)
    while best > 0:
        improved = False
        for k in range(4):
            for shift in sorted(range(-radius, radius + 1), key=abs):
                trial = corners.copy()
                trial[k] = (trial[k] + shift) % n
                if np.unique(trial).size < 4 or not np.all(np.diff((trial - trial[0]) % n) > 0):
                    continue
                score = _dividing_edges(trial, chords, position, n)
                if score < best:
                    corners, best, improved = trial, score, True
                    break
        if not improved:
            raise SolveError(f"cannot place the square's corners so that no interior edge joins two "
                             f"vertices of one side ({best} dividing edges remain)")
    return corners


def boundary_uv(points: np.ndarray, loop: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """``(L, 2)`` float64 positions of the loop's vertices on the square's perimeter.

    Corners land exactly on the square's corners; the vertices between two corners are spaced by
    the 3D arc length along that side.
    """
    n = loop.size
    p = points[loop].astype(np.float64)
    seg = np.linalg.norm(np.roll(p, -1, axis=0) - p, axis=1)  # edge i -> i + 1
    uv = np.zeros((n, 2))
    for k in range(4):
        s, e = corners[k], corners[(k + 1) % 4]
        idx = (s + np.arange((e - s) % n + 1)) % n
        lengths = np.concatenate([[0.0], np.cumsum(seg[idx[:-1]])])
        t = lengths / lengths[-1]
        uv[idx] = CORNER_UV[k] + t[:, None] * (CORNER_UV[(k + 1) % 4] - CORNER_UV[k])
    uv[corners] = CORNER_UV
    return uv


def tutte_embedding(points: np.ndarray, triangles: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """Bijective map of a disk-topology mesh onto the unit square.

    Args:
        points: ``(N, 3)`` vertex positions (mm); only used for the boundary (corner choice, arc
            length).
        triangles: ``(T, 3)`` int triangles, counter-clockwise seen from the front; every vertex
            must belong to a triangle.
        loop: ``(L,)`` the outer boundary loop in boundary-edge order.

    Returns:
        ``(N, 2)`` float64 UV coordinates in ``[0, 1]^2``; boundary vertices exactly on the perimeter.

    Raises:
        SolveError: if the embedding is not bijective (flipped or degenerate triangles).
    """
    n = points.shape[0]
    corners = choose_corners(points, loop, triangles)
    uv = np.zeros((n, 2))
    uv[loop] = boundary_uv(points, loop, corners)
    interior = np.ones(n, bool)
    interior[loop] = False
    a = adjacency(triangles, n)
    degree = np.asarray(a.sum(axis=1)).ravel()
    if np.any(degree == 0):
        raise SolveError(f"{int(np.sum(degree == 0))} vertices belong to no triangle")
    ii = np.flatnonzero(interior)
    laplacian = (sp.diags(degree) - a).tocsr()
    rhs = a[ii][:, loop] @ uv[loop]
    solve = spla.factorized(laplacian[ii][:, ii].tocsc())
    uv[ii] = np.stack([solve(rhs[:, 0]), solve(rhs[:, 1])], axis=1)
    areas = signed_areas(uv.astype(np.float32), triangles)
    if not np.all(areas < 0):
        raise SolveError(f"the Tutte embedding has {int(np.sum(areas >= 0))} flipped or degenerate triangles")
    return uv
