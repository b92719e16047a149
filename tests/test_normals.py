"""Vertex normals: known answers on an icosahedron, a sphere, hand-built corners; degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry.normals import vertex_normals


def icosahedron():
    """Regular icosahedron: 12 vertices on the unit sphere, 20 outward (CCW) triangles."""
    g = (1 + 5**0.5) / 2
    v = np.array(
        [[-1, g, 0], [1, g, 0], [-1, -g, 0], [1, -g, 0], [0, -1, g], [0, 1, g],
         [0, -1, -g], [0, 1, -g], [g, 0, -1], [g, 0, 1], [-g, 0, -1], [-g, 0, 1]],
        dtype=np.float64,
    )
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int32,
    )
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


def subdivide(vertices, triangles):
    """Split each triangle in four, projecting new midpoints onto the unit sphere."""
    vertices = list(vertices)
    midpoint = {}

    def mid(a, b):
        key = (min(a, b), max(a, b))
        if key not in midpoint:
            m = vertices[a] + vertices[b]
            vertices.append(m / np.linalg.norm(m))
            midpoint[key] = len(vertices) - 1
        return midpoint[key]

    faces = []
    for a, b, c in triangles:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        faces += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
    return np.array(vertices), np.array(faces, dtype=np.int32)


def test_icosahedron_normals_are_radial_by_symmetry():
    v, f = icosahedron()
    normals = vertex_normals(v[None], f).numpy()[0]
    np.testing.assert_allclose(normals, v, atol=1e-12)


def test_sphere_normals_approach_radial_direction_and_batch_is_independent():
    v, f = subdivide(*subdivide(*icosahedron()))
    scaled = np.stack([v * 80.0, v * 3.0 + np.array([1.0, 2.0, 3.0])])
    normals = vertex_normals(tf.constant(scaled, tf.float32), f).numpy()
    assert normals.dtype == np.float32 and normals.shape == (2, len(v), 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1, atol=1e-6)
    # Translation and scale do not change normals; they approach the radius (cos > 0.999).
    np.testing.assert_allclose(normals[0], normals[1], atol=1e-5)
    assert np.min(np.sum(normals[0] * v, axis=-1)) > 0.999


def test_area_weighting_with_hand_built_corner():
    # Vertex 0 is shared by a +z triangle of area 2 and a +y triangle of area 0.5.
    v = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 3, 4]], dtype=np.int32)
    normals = vertex_normals(v[None], f).numpy()[0]
    np.testing.assert_allclose(normals[0], np.array([0, 1, 4]) / np.sqrt(17), atol=1e-15)
    np.testing.assert_allclose(normals[1], [0, 0, 1])
    np.testing.assert_allclose(normals[3], [0, 1, 0])


def test_front_facing_ccw_triangle_points_towards_viewer():
    v = np.array([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    np.testing.assert_allclose(vertex_normals(v, [[0, 1, 2]]).numpy()[0], np.tile([0, 0, 1.0], (3, 1)))
    np.testing.assert_allclose(vertex_normals(v, [[0, 2, 1]]).numpy()[0], np.tile([0, 0, -1.0], (3, 1)))


def test_degenerate_triangles_and_isolated_vertices_are_finite():
    # Triangle 0 is collinear, triangle 1 repeats a vertex, vertex 5 belongs to no triangle,
    # vertices 6..9 form two opposite triangles whose normals cancel at the shared edge.
    v = np.array(
        [[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 0], [5, 5, 5],
         [0, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]],
        dtype=np.float32,
    )
    f = np.array([[0, 1, 2], [3, 3, 1], [6, 7, 8], [7, 6, 9]], dtype=np.int32)
    x = tf.constant(v[None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        normals = vertex_normals(x, f)
        loss = tf.reduce_sum(normals * tf.constant([0.3, -0.2, 0.7]))
    gradient = tape.gradient(loss, x).numpy()
    normals = normals.numpy()[0]
    assert np.all(np.isfinite(normals)) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1, rtol=1e-6)
    for vertex in (0, 1, 2, 3, 5, 6, 7):
        np.testing.assert_array_equal(normals[vertex], [0, 0, 1])
    np.testing.assert_array_equal(gradient[0, 5], [0, 0, 0])


def test_gradient_matches_finite_differences():
    v, f = icosahedron()
    jittered = v + np.random.default_rng(0).normal(scale=0.05, size=v.shape)
    weights = np.random.default_rng(1).normal(size=(1, 12, 3))

    def scalar(x):
        return tf.reduce_sum(vertex_normals(x, f) * weights)

    theoretical, numerical = tf.test.compute_gradient(scalar, [jittered[None]], delta=1e-5)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "vertices, triangles, message",
    [
        (np.zeros((4, 3)), [[0, 1, 2]], r"\(B, V, 3\)"),
        (np.zeros((1, 4, 2)), [[0, 1, 2]], r"\(B, V, 3\)"),
        (np.zeros((1, 4, 3)), [[0, 1]], r"\(T, 3\)"),
        (np.zeros((1, 4, 3)), [[0.0, 1.0, 2.0]], r"\(T, 3\)"),
        (np.zeros((1, 4, 3)), [[0, 1, 4]], r"\[0, 4\)"),
        (np.zeros((1, 4, 3)), [[0, -1, 2]], r"\[0, 4\)"),
    ],
)
def test_bad_shapes_and_indices_raise(vertices, triangles, message):
    with pytest.raises(InputError, match=message):
        vertex_normals(vertices, triangles)
