"""The TensorFlow rasteriser against an independent NumPy reference and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.render.rasterizer import interpolate, rasterize, rasterize_screen

#: R = I, t = 0 (vertices already in camera space), batch of one.
IDENTITY = (np.eye(3, dtype=np.float32)[None], np.zeros((1, 3), np.float32))


def reference_rasterize(xy, z, triangles, height, width, near=1e-3):
    """Loop-over-triangles z-buffer in float64 (strictly nearer wins, so ties keep the lower id).

    Returns ids, perspective-correct barycentrics, depth and an ``ambiguous`` mask of pixels whose
    centre is within 1e-4 px (in barycentric terms) of a covering triangle's edge or whose two
    nearest surfaces are within 1e-5 relative depth: float32 may legitimately differ there.
    """
    ids = -np.ones((height, width), np.int64)
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    ambiguous = np.zeros((height, width), bool)
    second = np.full((height, width), np.inf)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    for t, (i0, i1, i2) in enumerate(triangles):
        a, b, c = xy[i0], xy[i1], xy[i2]
        zs = np.array([z[i0], z[i1], z[i2]])
        if np.any(zs <= near):
            continue
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if area == 0:
            continue
        l0 = ((c[0] - b[0]) * (rows - b[1]) - (c[1] - b[1]) * (cols - b[0])) / area
        l1 = ((a[0] - c[0]) * (rows - c[1]) - (a[1] - c[1]) * (cols - c[0])) / area
        l2 = 1.0 - l0 - l1
        lam = np.stack([l0, l1, l2], -1)
        scale = np.abs(area) / max(np.linalg.norm(b - a), np.linalg.norm(c - b), np.linalg.norm(a - c))
        ambiguous |= np.abs(lam * scale).min(-1) < 1e-4
        inside = (lam >= 0).all(-1)
        w = lam / zs
        inv = w.sum(-1)
        d = 1.0 / inv
        p = w / inv[..., None]
        nearer = inside & (d < depth)
        second = np.where(inside & ~nearer, np.minimum(second, d), second)
        second = np.where(nearer, depth, second)
        ids[nearer] = t
        bary[nearer] = p[nearer]
        depth[nearer] = d[nearer]
    both = np.isfinite(second)
    ambiguous[both] |= np.abs(second[both] - depth[both]) <= 1e-5 * depth[both]
    depth[ids < 0] = 0
    return ids, bary, depth, ambiguous


def random_scene(rng, num_triangles, height, width):
    """Triangles from tiny to larger than the image, some partly off-screen, random depths."""
    centres = rng.uniform([-5, -5], [width + 5, height + 5], size=(num_triangles, 1, 2))
    sizes = np.exp(rng.uniform(np.log(0.3), np.log(2.5 * max(height, width)), size=(num_triangles, 1, 1)))
    xy = (centres + sizes * rng.uniform(-1, 1, size=(num_triangles, 3, 2))).reshape(-1, 2)
    z = rng.uniform(2.0, 10.0, size=num_triangles * 3)
    return xy, z, np.arange(num_triangles * 3).reshape(-1, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    height, width = 37, 45
    scenes = [random_scene(rng, 60, height, width) for _ in range(2)]
    xy = np.stack([s[0] for s in scenes])
    z = np.stack([s[1] for s in scenes])
    triangles = scenes[0][2]
    fragments = rasterize_screen(xy.astype(np.float32), z.astype(np.float32), triangles, height, width)
    for b in range(2):
        ids, bary, depth, ambiguous = reference_rasterize(xy[b], z[b], triangles, height, width)
        got = fragments.triangle_id[b].numpy()
        clear = ~ambiguous
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(got[clear], ids[clear])
        same = got == ids
        np.testing.assert_allclose(fragments.barycentrics[b].numpy()[same], bary[same], atol=2e-4)
        np.testing.assert_allclose(fragments.depth[b].numpy()[same], depth[same], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(fragments.mask[b].numpy(), (got >= 0).astype(np.float32))
        assert (ids >= 0).mean() > 0.5  # the scene actually covers the image


def test_perspective_correct_depth_of_a_tilted_plane():
    """Two triangles of a tilted plane: depth and interpolated 3D points are exact on every ray."""
    f, cx, cy = 50.0, 16.0, 12.0
    intrinsics = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float32)
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float64) * [6, 6, 0]
    normal = np.array([0.3, -0.2, 1.0])
    corners[:, 2] = 10.0 - (corners[:, :2] @ normal[:2]) / normal[2]  # plane n.X = 10
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize(corners[None].astype(np.float32), triangles, intrinsics[None], *IDENTITY, 24, 32)
    rows, cols = np.mgrid[0:24, 0:32] + 0.5
    rays = np.stack([(cols - cx) / f, (rows - cy) / f, np.ones_like(cols)], -1)
    expected = 10.0 / (rays @ normal)
    mask = fragments.mask[0].numpy() > 0
    assert mask.all()
    np.testing.assert_allclose(fragments.depth[0].numpy(), expected, rtol=1e-5)
    points = interpolate(corners[None].astype(np.float32), triangles, fragments)[0].numpy()
    np.testing.assert_allclose(points, rays * expected[..., None], rtol=1e-4, atol=1e-4)


def test_triangle_larger_than_image_and_near_plane():
    huge = np.array([[[-1e4, -1e4], [3e4, -1e4], [-1e4, 3e4]]], np.float32)
    fragments = rasterize_screen(huge, np.full((1, 3), 5.0, np.float32), [[0, 1, 2]], 16, 16)
    assert fragments.mask.numpy().all()
    behind = rasterize_screen(huge, np.array([[5.0, 5.0, -1.0]], np.float32), [[0, 1, 2]], 16, 16)
    assert not behind.mask.numpy().any()


def test_backface_culling_uses_front_ccw_convention():
    """A model-space CCW triangle seen from the front (R = diag(1,-1,-1)) survives culling."""
    model = np.array([[-1, -1, 0], [1, -1, 0], [0, 1, 0]], np.float64)  # CCW seen from +z
    cam = (np.array([[[30, 0, 8], [0, 30, 8], [0, 0, 1]]], np.float32),
           np.diag([1.0, -1.0, -1.0])[None].astype(np.float32), np.array([[0, 0, 5]], np.float32))
    vertices = model[None].astype(np.float32)
    front = rasterize(vertices, [[0, 1, 2]], *cam, 16, 16, cull_backfaces=True)
    back = rasterize(vertices, [[0, 2, 1]], *cam, 16, 16, cull_backfaces=True)
    kept = rasterize(vertices, [[0, 2, 1]], *cam, 16, 16)
    assert front.mask.numpy().sum() > 20
    assert back.mask.numpy().sum() == 0
    assert kept.mask.numpy().sum() == front.mask.numpy().sum()


def test_gradients_match_finite_differences():
    xy = tf.constant([[[2.3, 1.7], [27.9, 4.1], [9.2, 22.6]]], tf.float32)
    z = tf.constant([[3.0, 4.5, 6.0]], tf.float32)
    weights = tf.constant(np.random.default_rng(0).normal(size=(1, 24, 30, 3)), tf.float32)

    def loss(xy, z):
        fragments = rasterize_screen(xy, z, [[0, 1, 2]], 24, 30)
        interior = tf.cast(tf.reduce_min(fragments.barycentrics, -1) > 0.05, tf.float32)
        interior = tf.stop_gradient(interior)
        return tf.reduce_sum(interior[..., None] * weights * fragments.barycentrics) + \
            tf.reduce_sum(interior * fragments.depth)

    with tf.GradientTape() as tape:
        tape.watch([xy, z])
        value = loss(xy, z)
    grad_xy, grad_z = tape.gradient(value, [xy, z])
    assert np.isfinite(grad_xy.numpy()).all()
    # the interior mask is fixed, so compare against a float64 reference of the same loss
    mask = tf.cast(tf.reduce_min(rasterize_screen(xy, z, [[0, 1, 2]], 24, 30).barycentrics, -1) > 0.05, tf.float64)

    def loss64(xy, z):
        rows, cols = np.mgrid[0:24, 0:30] + 0.5
        a, b, c = xy[0]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        l0 = ((c[0] - b[0]) * (rows - b[1]) - (c[1] - b[1]) * (cols - b[0])) / area
        l1 = ((a[0] - c[0]) * (rows - c[1]) - (a[1] - c[1]) * (cols - c[0])) / area
        w = np.stack([l0, l1, 1 - l0 - l1], -1) / z[0]
        inv = w.sum(-1)
        p = w / inv[..., None]
        m = mask[0].numpy()
        return (m[..., None] * weights[0].numpy() * p).sum() + (m / inv).sum()

    h = 1e-5
    x0, z0 = xy.numpy().astype(np.float64), z.numpy().astype(np.float64)
    for idx in np.ndindex(x0.shape):
        e = np.zeros_like(x0)
        e[idx] = h
        fd = (loss64(x0 + e, z0) - loss64(x0 - e, z0)) / (2 * h)
        assert grad_xy.numpy()[idx] == pytest.approx(fd, rel=2e-3, abs=2e-3)
    for idx in np.ndindex(z0.shape):
        e = np.zeros_like(z0)
        e[idx] = h
        fd = (loss64(x0, z0 + e) - loss64(x0, z0 - e)) / (2 * h)
        assert grad_z.numpy()[idx] == pytest.approx(fd, rel=2e-3, abs=2e-3)


@pytest.mark.parametrize("xy, z, triangles", [
    (np.zeros((3, 2), np.float32), np.ones((1, 3), np.float32), [[0, 1, 2]]),
    (np.zeros((1, 3, 2), np.float32), np.ones((1, 4), np.float32), [[0, 1, 2]]),
    (np.zeros((1, 3, 2), np.float32), np.ones((1, 3), np.float32), [0, 1, 2]),
])
def test_bad_shapes_raise_input_error(xy, z, triangles):
    with pytest.raises(InputError):
        rasterize_screen(xy, z, triangles, 8, 8)


def test_bad_camera_inputs_raise_input_error():
    with pytest.raises(InputError):
        rasterize(np.zeros((1, 3, 2), np.float32), [[0, 1, 2]], IDENTITY[0], *IDENTITY, 8, 8)
    with pytest.raises(InputError):
        rasterize(np.ones((1, 3, 3), np.float32), [[0, 1, 2]], np.eye(3, dtype=np.float32), *IDENTITY, 8, 8)
