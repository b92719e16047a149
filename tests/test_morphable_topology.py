"""Boundary loops and hole filling: the mesh becomes a disk whose new vertices average their loop."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import grid_mesh, toy_model

from tfface.errors import ModelFileError
from tfface.morphable.topology import boundary_loops, cotangent_laplacian, fill_holes


def test_grid_with_hole_has_outer_and_inner_loop():
    points, triangles = grid_mesh(8, hole=(3, 5, 3, 5))
    loops = sorted(boundary_loops(triangles), key=len)
    # The 12-vertex ring around the 2 x 2 removed vertices, less the two ring corners whose
    # triangles survive on the other diagonal; the outer loop has 4 x 7 edges.
    assert [len(loop) for loop in loops] == [10, 28]


def test_fill_holes_appends_one_vertex_per_inner_loop_with_loop_means():
    points, triangles = grid_mesh(8, hole=(3, 5, 3, 5))
    model = toy_model(points, triangles)
    inner = min(boundary_loops(triangles), key=len)
    filled = fill_holes(model)
    m = filled.model
    assert filled.num_original_vertices == model.num_vertices and m.num_vertices == model.num_vertices + 1
    assert len(boundary_loops(m.triangles)) == 1 and len(filled.outer_loop) == 28
    np.testing.assert_allclose(m.mean[-1], model.mean[inner].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[:, -1], model.shape_basis[:, inner].mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.albedo_mean[-1], model.albedo_mean[inner].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(m.mean[: model.num_vertices], model.mean)
    # The fan keeps the orientation: every new triangle faces +z like the grid.
    new = m.triangles[len(model.triangles):]
    p = m.mean[new]
    assert np.all(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2] > 0)


def test_default_model_becomes_a_disk(default_model):
    filled = fill_holes(default_model)
    assert filled.model.num_vertices == default_model.num_vertices + 3  # mouth and two eyes
    loops = boundary_loops(filled.model.triangles)
    assert len(loops) == 1 and len(loops[0]) == 138


def test_non_manifold_and_closed_meshes_are_rejected():
    points, triangles = grid_mesh(4)
    with pytest.raises(ModelFileError, match="directed edge"):
        boundary_loops(np.concatenate([triangles, triangles[:1]]))
    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    model = toy_model(np.eye(4, 3) * 10.0 + np.array([0, 0, 1.0]), tetra)
    with pytest.raises(ModelFileError, match="no boundary"):
        fill_holes(model)


def test_cotangent_laplacian_annihilates_linear_functions_inside():
    points, triangles = grid_mesh(9)
    laplacian, areas = cotangent_laplacian(points * [1, 1, 0], triangles)
    interior = np.ones(len(points), bool)
    interior[boundary_loops(triangles)[0]] = False
    for f in (points[:, 0], points[:, 1]):
        assert np.abs((laplacian @ f)[interior]).max() < 1e-9
    np.testing.assert_allclose(areas.sum(), 100.0 * 100.0)
