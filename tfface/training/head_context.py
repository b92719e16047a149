"""The photo around a profiled face, turned with the head (3DDFA's anchors, on an ellipsoid).

Face profiling (:mod:`tfface.training.profiling`) turns the face mesh only; the photo around it
(ears, hair, the head's outline) stays where the frontal head had it. A network pretrained so
learns that nothing beyond the face tells the turn, while in a real profile the ear, the hair
and the head's outline have turned with the face.

:class:`HeadContext` carries the photo around the face with a head. A grid of vertices spans the
aligned photo; each vertex whose camera ray meets an ellipsoid head (:func:`head_ellipsoid`, sized
from the face mesh) lies on its front surface and turns with the face, about the same centre;
every other vertex lies on the background, far behind, and stays. Rasterised turned, the grid
gives each pixel the position in the photo its colour comes from: a warp that moves the head's
surroundings with the face and stretches the cells between head and background, as 3DDFA's face
profiling does with its anchors. A pixel whose colour would come from the frontal face takes it
from beyond the face's edge instead (:func:`~tfface.training.profiling.mirrored_beyond_edges`), so
no part of the frontal face shows beside the turned one.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfface.geometry.camera import project
from tfface.render.rasterizer import interpolate, rasterize_screen

#: Side of a grid cell of :class:`HeadContext` (pixels).
CELL = 4.0

#: Camera depth of the background vertices, in camera-to-face distances: far enough behind the
#: head that the head always hides it.
BACKGROUND_DEPTH = 3.0

#: The ellipsoid head's half axes, relative to the face mesh (:func:`head_ellipsoid`): width over
#: the mesh's half width (a head is a little wider than the face at the ears); height over the
#: mesh's height (the crown lies above the mesh, the chin at its bottom); depth over the mesh's
#: depth from its rearmost points to its tip (the front stays behind the nose and the cheeks).
HEAD_AXES = (1.05, 0.6, 0.85)


def head_ellipsoid(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid head around a face mesh.

    Its axes follow the model's (x right, y up, z to the front). It is centred on the mesh's
    horizontal middle, at the depth of its rearmost points (the mesh's sides, by the ears), with
    its chin at the mesh's bottom; its half axes are :data:`HEAD_AXES` times the mesh's half width,
    height and depth.

    Args:
        mean: ``(V, 3)`` the face mesh (mm).

    Returns:
        ``centre`` ``(3,)`` and ``radii`` ``(3,)`` (mm).
    """
    low, high = mean.min(0), mean.max(0)
    radii = np.array([HEAD_AXES[0] * (high[0] - low[0]) / 2.0, HEAD_AXES[1] * (high[1] - low[1]),
                      HEAD_AXES[2] * (high[2] - low[2])])
    centre = np.array([(low[0] + high[0]) / 2.0, low[1] + radii[1], low[2]])
    return centre, radii


def front_hits(origin: np.ndarray, directions: np.ndarray, centre: np.ndarray,
               radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where rays first meet an ellipsoid.

    Args:
        origin: ``(3,)`` the rays' common origin, outside the ellipsoid.
        directions: ``(N, 3)`` ray directions (any length).
        centre, radii: ``(3,)`` the ellipsoid ``sum(((X - centre) / radii)^2) = 1``.

    Returns:
        ``hit`` ``(N,)`` bool and ``s`` ``(N,)``: the ray parameter of the nearer intersection
        ``origin + s * direction`` (NaN where the ray misses).
    """
    o = (origin - centre) / radii
    e = directions / radii
    a = np.sum(e * e, -1)
    b = np.sum(e * o, -1)
    c = np.sum(o * o) - 1.0
    discriminant = b * b - a * c
    hit = discriminant > 0
    s = np.where(hit, (-b - np.sqrt(np.maximum(discriminant, 0.0))) / a, np.nan)
    hit &= s > 0
    return hit, np.where(hit, s, np.nan)


def grid_triangles(rows: int, columns: int) -> np.ndarray:
    """``(2 (rows - 1) (columns - 1), 3)`` int32: two triangles per cell of a ``rows`` x ``columns``
    vertex grid (vertex ``r * columns + c``)."""
    r, c = np.mgrid[0:rows - 1, 0:columns - 1]
    a = (r * columns + c).ravel()
    b, d, e = a + 1, a + columns, a + columns + 1
    return np.concatenate([np.stack([a, b, e], -1), np.stack([a, e, d], -1)]).astype(np.int32)


class HeadContext:
    """Where each pixel around a turned face takes its colour from (module docstring).

    Args:
        mean: ``(V, 3)`` the face mesh (mm) the profiler turns.
        centre: ``(3,)`` the point it turns about (mm).
        camera: ``(K, R, t)`` ``(3, 3)``, ``(3, 3)``, ``(3,)`` of the template placement.
        distance: camera-to-face distance (mm).
        frontal_region: ``(S, S)`` bool, where the frontal face covers the photo.
        beyond_edge: ``(S, S, 2)`` where each pixel of the frontal face region takes its colour
            when uncovered (:func:`~tfface.training.profiling.mirrored_beyond_edges`).

    Attributes:
        ellipsoid: ``(centre, radii)`` of the head (:func:`head_ellipsoid`).
        turn_centre: ``(3,)`` the point the head turns about (``centre``).
        grid: ``(N, 2)`` the grid vertices' pixel positions in the aligned photo.
        vertices: ``(N, 3)`` their model-space positions (mm): on the head or on the background.
        on_head: ``(N,)`` bool, which grid vertices lie on the head (and turn).
    """

    def __init__(self, mean: np.ndarray, centre: np.ndarray, camera: tuple[np.ndarray, np.ndarray, np.ndarray],
                 distance: float, frontal_region: np.ndarray, beyond_edge: np.ndarray):
        K, R, t = (np.asarray(a, np.float64) for a in camera)
        size = frontal_region.shape[0]
        count = math.ceil(size / CELL) + 1
        xs = np.linspace(0.0, size, count)
        self.grid = grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)  # pixels, row by row
        rays = np.concatenate([grid, np.ones_like(grid[:, :1])], -1) @ np.linalg.inv(K).T  # camera space, Z = 1
        origin = -R.T @ t
        directions = rays @ R  # model space: R^T ray
        self.ellipsoid = head_ellipsoid(np.asarray(mean, np.float64))
        self.on_head, s = front_hits(origin, directions, *self.ellipsoid)
        s = np.where(self.on_head, s, BACKGROUND_DEPTH * distance)  # s is the camera depth, since ray Z = 1
        self.vertices = origin + s[:, None] * directions
        self._points = tf.constant(self.vertices, tf.float32)
        self._grid = tf.constant(grid, tf.float32)
        self._frontal_region = tf.constant(frontal_region, tf.bool)
        self._beyond_edge = tf.constant(beyond_edge, tf.float32)
        self._turns = tf.constant(self.on_head[:, None], tf.bool)
        self.turn_centre = np.asarray(centre, np.float64)
        self._centre = tf.constant(centre, tf.float32)
        self._triangles = tf.constant(grid_triangles(count, count))
        self._camera = tuple(tf.constant(a, tf.float32) for a in (K, R, t))
        self.size = size

    def __call__(self, rotations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Where each pixel of photos whose heads turn by ``rotations`` takes its colour from.

        Args:
            rotations: ``(B, 3, 3)`` model-space turns about the face's centre.

        Returns:
            ``sources`` ``(B, S, S, 2)`` pixel positions in the aligned photo, and ``covered``
            ``(B, S, S, 1)``, 1 where the turned grid covers the pixel (elsewhere ``sources`` is 0
            and the pixel keeps the photo's colour).
        """
        batch = tf.shape(rotations)[0]
        turned = tf.einsum("bij,vj->bvi", rotations, self._points - self._centre) + self._centre
        vertices = tf.where(self._turns[None], turned, self._points[None])
        K, R, t = (tf.tile(a[None], tf.concat([[batch], tf.ones_like(tf.shape(a))], 0)) for a in self._camera)
        pixels, depth = project(vertices, K, R, t)
        fragments = rasterize_screen(pixels, depth, self._triangles, self.size, self.size)
        # Interpolated on screen, not perspective-correct: the sources of a cell between head and
        # background (depths 1:3) then blend evenly, and an unturned grid maps every pixel to itself.
        # Perspective-correct blends of (source * depth, depth) divide to the screen-space blend.
        grid = tf.broadcast_to(self._grid[None], tf.concat([[batch], tf.shape(self._grid)], 0))
        blended = interpolate(tf.concat([grid * depth[..., None], depth[..., None]], -1), self._triangles, fragments)
        sources = tf.math.divide_no_nan(blended[..., :2], blended[..., 2:])
        row_column = tf.reverse(tf.clip_by_value(tf.cast(tf.floor(sources), tf.int32), 0, self.size - 1), [-1])
        in_face = tf.gather_nd(self._frontal_region, row_column)[..., None]
        covered = fragments.mask[..., None]
        return tf.where(in_face, tf.gather_nd(self._beyond_edge, row_column), sources) * covered, covered
