"""Mesh topology: boundary loops, hole filling and graph Laplacians of a triangle mesh.

The UV-3DMM needs the surface to be a topological disk (supplement A): every boundary loop but
the outer one (the longest) is closed with one auxiliary vertex connected to the loop's vertices.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from tfface.errors import ModelFileError
from tfface.morphable.model import MorphableModel


def directed_edges(triangles: np.ndarray) -> np.ndarray:
    """``(3T, 2)`` int64 directed edges (a, b) of every triangle, in triangle order."""
    tri = np.asarray(triangles, np.int64)
    return np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """The boundary loops of a consistently oriented, manifold triangle mesh.

    Args:
        triangles: ``(T, 3)`` int vertex indices.

    Returns:
        One ``(L,)`` int64 array of vertex indices per loop, ordered along the directed boundary
        edges (the direction the edges have in their triangles: counter-clockwise around the
        outer boundary of a mesh with counter-clockwise triangles).

    Raises:
        ModelFileError: if a directed edge occurs twice or a vertex has two outgoing boundary
            edges (non-manifold or inconsistently oriented mesh).
    """
    edges = directed_edges(triangles)
    n = int(edges.max()) + 1
    forward = edges[:, 0] * n + edges[:, 1]
    if np.unique(forward).size != forward.size:
        raise ModelFileError("the mesh has a directed edge used twice (non-manifold or inconsistent orientation)")
    boundary = edges[~np.isin(forward, edges[:, 1] * n + edges[:, 0])]
    successor: dict[int, int] = {}
    for a, b in boundary.tolist():
        if a in successor:
            raise ModelFileError(f"vertex {a} has two outgoing boundary edges (non-manifold mesh)")
        successor[a] = b
    loops = []
    while successor:
        start = next(iter(successor))
        loop, current = [start], successor.pop(start)
        while current != start:
            if current not in successor:
                raise ModelFileError("a boundary loop of the mesh does not close")
            loop.append(current)
            current = successor.pop(current)
        loops.append(np.asarray(loop, np.int64))
    return loops


def loop_length(points: np.ndarray, loop: np.ndarray) -> float:
    """Length of the closed polygon ``points[loop]`` (same unit as ``points``)."""
    p = points[loop]
    return float(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum())


@dataclasses.dataclass(frozen=True)
class FilledMesh:
    """A morphable model made a topological disk.

    Attributes:
        model: the model with one auxiliary vertex per filled hole appended after the original
            vertices; each auxiliary vertex's mean, bases and albedo are the means over its loop.
        outer_loop: ``(L,)`` vertex indices of the remaining (outer) boundary, in boundary order.
        num_original_vertices: number of vertices before filling.
    """

    model: MorphableModel
    outer_loop: np.ndarray
    num_original_vertices: int


def fill_holes(model: MorphableModel) -> FilledMesh:
    """Close every boundary loop but the longest with a fan around one auxiliary vertex.

    Args:
        model: a manifold, consistently oriented morphable model with at least one boundary.

    Returns:
        The :class:`FilledMesh`; the new triangles keep the mesh's orientation.

    Raises:
        ModelFileError: if the mesh has no boundary (it cannot be flattened to a disk).
    """
    loops = boundary_loops(model.triangles)
    if not loops:
        raise ModelFileError(f"{model.name}: the mesh has no boundary; it cannot be flattened onto a square")
    lengths = [loop_length(model.mean, loop) for loop in loops]
    outer = int(np.argmax(lengths))
    holes = [loop for i, loop in enumerate(loops) if i != outer]
    n = model.num_vertices
    new_triangles = [model.triangles]
    for k, loop in enumerate(holes):
        # The boundary edge a -> b belongs to an existing triangle, so the fan uses b -> a.
        centre = np.full(loop.size, n + k)
        new_triangles.append(np.stack([np.roll(loop, -1), loop, centre], axis=1))

    def extend(field: np.ndarray, axis: int) -> np.ndarray:
        extra = [np.take(field, loop, axis=axis).mean(axis=axis, keepdims=True) for loop in holes]
        return np.concatenate([field, *extra], axis=axis)

    filled = dataclasses.replace(
        model,
        mean=extend(model.mean, 0),
        shape_basis=extend(model.shape_basis, 1),
        expression_basis=extend(model.expression_basis, 1),
        albedo_mean=extend(model.albedo_mean, 0),
        albedo_basis=extend(model.albedo_basis, 1),
        triangles=np.concatenate(new_triangles).astype(np.int32),
    )
    return FilledMesh(filled, loops[outer], n)


def adjacency(triangles: np.ndarray, num_vertices: int) -> sp.csr_matrix:
    """Symmetric ``(N, N)`` 0/1 vertex adjacency matrix of the mesh edges."""
    edges = directed_edges(triangles)
    a = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices, num_vertices))
    a = a + a.T
    a.data[:] = 1.0
    return a.tocsr()


def cotangent_laplacian(points: np.ndarray, triangles: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Cotangent Laplacian and lumped (barycentric) vertex areas of a triangle mesh.

    Args:
        points: ``(N, 3)`` vertex positions.
        triangles: ``(T, 3)`` int vertex indices.

    Returns:
        ``L`` ``(N, N)``, symmetric positive semi-definite (``x^T L x`` is the Dirichlet energy),
        and ``areas`` ``(N,)``, one third of the area of the triangles around each vertex.
    """
    p = np.asarray(points, np.float64)
    tri = np.asarray(triangles, np.int64)
    n = len(p)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = tri[:, (k + 1) % 3], tri[:, (k + 2) % 3], tri[:, k]
        u, v = p[i] - p[o], p[j] - p[o]
        cross = np.linalg.norm(np.cross(u, v), axis=1)
        cot = np.einsum("ij,ij->i", u, v) / np.maximum(cross, 1e-12)
        rows += [i, j]
        cols += [j, i]
        vals += [-0.5 * cot, -0.5 * cot]
    off = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    laplacian = off - sp.diags(np.asarray(off.sum(axis=1)).ravel())
    e1, e2 = p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]]
    tri_area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    areas = np.bincount(tri.ravel(), weights=np.repeat(tri_area / 3.0, 3), minlength=n)
    return laplacian.tocsr(), areas
