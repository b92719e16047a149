"""The Tutte embedding is a bijection onto the unit square."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import grid_mesh, toy_model

from tfface.morphable.topology import boundary_loops, fill_holes
from tfface.morphable.tutte import choose_corners, signed_areas, tutte_embedding


def assert_bijective_on_square(uv, triangles, loop):
    areas = signed_areas(uv, triangles)
    assert np.all(areas < 0), f"{np.sum(areas >= 0)} flipped or degenerate triangles"
    # The triangles tile the unit square exactly once.
    np.testing.assert_allclose(-areas.sum(), 1.0, rtol=1e-6)
    boundary = uv[loop]
    on_side = np.any((boundary == 0.0) | (boundary == 1.0), axis=1)
    assert np.all(on_side), "boundary vertex off the square"
    corners = {(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)}
    assert corners <= {tuple(p) for p in boundary.tolist()}
    interior = np.setdiff1d(np.arange(len(uv)), loop)
    assert np.all((uv[interior] > 0) & (uv[interior] < 1))


def test_default_uv_model_is_bijective(default_uv_model):
    m = default_uv_model.model
    (loop,) = boundary_loops(m.triangles)
    assert default_uv_model.vertex_uv.dtype == np.float32
    assert_bijective_on_square(default_uv_model.vertex_uv, m.triangles, loop)
    assert default_uv_model.num_original_vertices == 6706 and m.num_vertices == 6709


@pytest.mark.parametrize("angle", [0.0, np.pi / 4, 0.3])
def test_grid_embeddings_are_bijective_whatever_the_corner_geometry(angle):
    # Rotated by 45 degrees the geometric corner choice lands mid-side of the grid, where the
    # grid's ears (triangles with three boundary vertices) sit: the corners must move.
    model = toy_model(*grid_mesh(10, hole=(3, 6, 4, 6), angle=angle))
    filled = fill_holes(model)
    uv = tutte_embedding(filled.model.mean, filled.model.triangles, filled.outer_loop)
    assert_bijective_on_square(uv.astype(np.float32), filled.model.triangles, filled.outer_loop)


def test_corners_avoid_dividing_edges():
    points, triangles = grid_mesh(6, angle=np.pi / 4)
    (loop,) = boundary_loops(triangles)
    corners = loop[choose_corners(points, loop, triangles)]
    # The grid's two ears (corner vertices in a single triangle) must be square corners.
    counts = np.bincount(triangles.ravel(), minlength=len(points))
    ears = np.flatnonzero(counts == 1)
    assert set(ears) <= set(corners)
