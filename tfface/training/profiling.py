"""Face profiling for pretraining: a photo's face turned in 3D, on the mean shape or on its own fit.

Supplement F pretrains on roughly aligned photos against one fixed target: the mean shape placed
frontally at the mean 5-landmark position. A network pretrained so knows frontal faces only, and
on real photos the unsupervised training does not teach it pose (BUILD.md, "Training on real
photographs": its fitted yaw spreads 2 deg where the photos' spreads 44 deg).

Profiling shows the same photos turned. The mean shape, placed at the template as in supplement
F, is rotated about its centroid by a yaw and a pitch and rendered; every pixel it covers takes
the photo's colour where the same surface point lies in the frontal placement, and its targets
are the turned shape's correspondence, depth (camera Z over the camera distance, so about 1 like
the constant frontal target) and face region. Pixels the turned face does not cover keep the
photo, except where the frontal face was: there, so that no second face shows beside the turned
one, each row takes the photo beyond the frontal face's edge, mirrored across that edge (the
nearer side's). As in supplement F, no landmark of any photo is used: the face is where the template says
an aligned face is (the idea of 3DDFA's face profiling, with the template instead of per-image
landmarks).

Framing. Turned about its centroid, the face keeps its head centroid where the frontal face's
was, while a detector or the evaluation protocol frames a turned face by the box of its
landmarks, which leaves the centroid as the face turns (up to 0.14 of the crop's side at 45
degrees). With ``framing="landmark_box"``, :meth:`FaceProfiler.framing_transforms` gives the
similarity that moves each turned proxy's 68-landmark box onto the frontal face's box (the
proxy's landmarks, never a photo's), for the augmentation to apply to image and maps together.

Relighting. A turned head keeps the scene's light, so its surface points face the light
differently: a cheek in shadow in the frontal photo may turn towards the light. With
``relight=True`` each photo's light is estimated in closed form from its frontal face region
(first-order spherical harmonics of the frontal proxy's normals against the photo's luminance,
one albedo for the whole face: :data:`RELIGHT_BANDS`), and every turned surface point's colour is
scaled by the ratio of its shading turned to its shading in the photo (:data:`RELIGHT_RATIO`
bounds it).

Own fits. A self-labelled photo (:mod:`tfface.training.self_labels`) comes with a trained
network's fit of it: its own shape and expression under its own camera. :class:`FitProfiler`
turns that fit instead of the mean shape, so the turned example's targets follow the photo's face
rather than the template's average one (3DDFA profiles its training photos on fitted 3DMMs alike;
here the fits come from the landmark-free network itself). Only near-frontal fits are turned
(:data:`tfface.training.self_labels.PROFILABLE_YAW`): a turned face takes every colour from the
photo, which shows little of a face already turned away.

Surroundings. Pasted into the photo as it is, a turned face ends in the hard edge of the model's
face region, with the photo's hair, ears and background unmoved beyond it: an outline that no real
turned head has and that tells the turn by itself. With ``surroundings="turned"``
(:class:`FitProfiler`) the photo around the face turns with it instead, as 3DDFA's profiling
turns the region around its fitted face: a grid mesh over the whole photo takes the fitted face's
depth, spread outwards (:data:`SURROUND_SPREAD`), and is turned as the face is, the turn fading to
none away from the face; the photo rendered through it fills every pixel the turned face does not
cover, so the face's outline continues into its own photo's surroundings.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfface.data.augment import similarity_matrices
from tfface.errors import InputError
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.render.rasterizer import Fragments, interpolate, rasterize
from tfface.geometry.camera import project
from tfface.geometry.normals import vertex_normals
from tfface.geometry.sh import sh_basis
from tfface.layers.pixel_sampling import bilinear_sample
from tfface.training.config import PROFILE_FRAMINGS, PROFILE_SURROUNDINGS
from tfface.training.pretraining import CAMERA_DISTANCE, pretraining_targets
from tfface.training.self_labels import fit_camera

#: Camera-to-centroid distance of the template placement (mm); depth targets are Z over it.
DISTANCE = CAMERA_DISTANCE

#: Spherical-harmonic basis functions of the light the relighting estimates: the 4 of order <= 1
#: (ambient and one direction), which the mean shape's normals can tell; the order-2 ones would fit
#: the proxy's misfit to the real face.
RELIGHT_BANDS = 4

#: Ridge (per frontal face pixel) of the relighting's least-squares light estimate. Small: on a
#: face seen from the front the ambient and the frontal (z) basis functions are nearly collinear,
#: and a heavier ridge splits a frontal light between them wrongly (1e-3 gave the test's light as
#: ambient 1.24 and z -0.04 instead of 1.5 and 0.15).
RELIGHT_RIDGE = 1e-5

#: Bounds of the relighting's shading ratio (turned over frontal): a point in deep shadow in the
#: photo has no colour left to brighten, and a lit one turned away from the light keeps some.
RELIGHT_RATIO = (0.3, 2.5)


#: Spread (standard deviation, a fraction of the photo's side) over which a turned fit carries the
#: photo around its face along (module docstring, "Surroundings"): the face's depth is extended
#: outwards over it, and the turn fades from whole at the face's edge to none about three spreads out.
SURROUND_SPREAD = 0.15

#: Spacing (pixels) of the grid mesh that carries the photo around a turned fit.
SURROUND_GRID = 4

#: Depth (pixels) of the rim of the photo's face region that the turned surroundings may show: the
#: face's edge continues into them, but its interior would show a second face beside the turned one.
SURROUND_EDGE = 2


def gaussian_blur(maps: tf.Tensor, sigma: float) -> tf.Tensor:
    """``(B, H, W, C)`` maps blurred by a Gaussian of standard deviation ``sigma`` pixels (truncated
    at three; zero beyond the edges)."""
    radius = int(math.ceil(3 * sigma))
    taps = np.exp(-np.arange(-radius, radius + 1, dtype=np.float64) ** 2 / (2 * sigma ** 2))
    channels = int(maps.shape[-1])
    column = tf.constant(np.tile((taps / taps.sum()).reshape(-1, 1, 1, 1), (1, 1, channels, 1)), tf.float32)
    maps = tf.nn.depthwise_conv2d(maps, column, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(maps, tf.reshape(column, [1, -1, channels, 1]), [1, 1, 1, 1], "SAME")


def image_grid(size: int, spacing: int) -> tuple[np.ndarray, np.ndarray]:
    """A grid mesh over a square of ``size`` pixels: ``(G, 2)`` float32 vertex positions (x, y in
    pixels, from the square's corner 0 to its far corner ``size``, about ``spacing`` apart) and
    ``(T, 3)`` int32 triangles, two per cell."""
    count = -(-size // spacing) + 1
    xs = np.linspace(0.0, size, count, dtype=np.float32)
    points = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    index = np.arange(count * count).reshape(count, count)
    corner, right, below, across = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    triangles = np.concatenate([np.stack([corner, right, across], -1).reshape(-1, 3),
                                np.stack([corner, across, below], -1).reshape(-1, 3)])
    return points, triangles.astype(np.int32)


def turn_matrices(yaw: tf.Tensor, pitch: tf.Tensor) -> tf.Tensor:
    """``(..., 3, 3)`` model-space rotations: ``pitch`` about the model's x axis, then ``yaw``
    about its y (vertical) axis, both ``(...)`` in radians (e.g. ``(B,)``, one per example)."""
    cy, sy, cp, sp = tf.cos(yaw), tf.sin(yaw), tf.cos(pitch), tf.sin(pitch)
    zero, one = tf.zeros_like(yaw), tf.ones_like(yaw)
    yaw_m = tf.stack([tf.stack([cy, zero, sy], -1), tf.stack([zero, one, zero], -1),
                      tf.stack([-sy, zero, cy], -1)], -2)
    pitch_m = tf.stack([tf.stack([one, zero, zero], -1), tf.stack([zero, cp, -sp], -1),
                        tf.stack([zero, sp, cp], -1)], -2)
    return yaw_m @ pitch_m


def mirrored_beyond_edges(region: tf.Tensor) -> tf.Tensor:
    """``(B, S, S, 2)`` pixel positions (x, y): each pixel of a row's run of ``region`` (``(B, S, S)``
    bool; the run from its first to its last pixel, holes included) mirrored across the run's nearer
    end (x only); pixels outside the run map to themselves."""
    region = tf.cast(region, tf.int32)
    size = tf.shape(region)[2]
    xs = tf.cast(tf.range(size), tf.float32) + 0.5
    left = tf.cast(tf.argmax(region, -1), tf.float32)[..., None]  # (B, S, 1): the run's edges
    right = tf.cast(size, tf.float32) - tf.cast(tf.argmax(tf.reverse(region, [-1]), -1), tf.float32)[..., None]
    inside = (xs >= left) & (xs < right) & (tf.reduce_max(region, -1) > 0)[..., None]
    mirrored = tf.where(inside, tf.where(xs - left < right - xs, 2 * left - xs, 2 * right - xs), xs)
    ys = tf.cast(tf.range(tf.shape(region)[1]), tf.float32) + 0.5
    ys = tf.broadcast_to(ys[None, :, None], tf.shape(mirrored))
    return tf.stack([mirrored, ys], -1)


def box_of(points: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Centre ``(..., 2)`` and longer side ``(...)`` of the bounding boxes of ``(..., N, 2)`` points."""
    low, high = tf.reduce_min(points, -2), tf.reduce_max(points, -2)
    return (low + high) / 2.0, tf.reduce_max(high - low, -1)


def box_framing(points: tf.Tensor, centre: tf.Tensor, side: tf.Tensor, image_size: int) -> tf.Tensor:
    """``(B, 3, 3)`` forward pixel similarities (scale and shift) that move the bounding box of each
    example's ``(B, N, 2)`` points onto a box of ``centre`` ``(B, 2)`` and longer side ``side``
    ``(B,)`` (or unbatched ``(2,)`` and ``()``)."""
    points_centre, points_side = box_of(points)
    scale = side / points_side
    # similarity_matrices scales about the image centre c: s (p - c) + c + shift takes the box
    # centre to the target one when shift = (target - c) - s (centre - c).
    image_centre = image_size / 2.0
    shift = (centre - image_centre) - scale[:, None] * (points_centre - image_centre)
    return similarity_matrices(tf.zeros_like(scale), scale, shift, image_size, image_size)


def shading_ratios(light: tf.Tensor, frontal_normals: tf.Tensor, turned_normals: tf.Tensor) -> tf.Tensor:
    """``(B, V)`` ratio of each vertex's shading turned to its shading in the photo, bounded by
    :data:`RELIGHT_RATIO`.

    Args:
        light: ``(B, RELIGHT_BANDS)`` each photo's SH light.
        frontal_normals: ``(B, V, 3)`` or ``(V, 3)`` camera-space unit normals as in the photo.
        turned_normals: ``(B, V, 3)`` the same normals turned.
    """
    light = light[:, None, :]
    frontal = tf.reduce_sum(sh_basis(frontal_normals)[..., :RELIGHT_BANDS] * light, -1)
    shading = tf.reduce_sum(sh_basis(turned_normals)[..., :RELIGHT_BANDS] * light, -1)
    low, high = RELIGHT_RATIO
    return tf.clip_by_value(tf.math.divide_no_nan(shading, frontal), low, high)


def estimate_light(images: tf.Tensor, pixel_normals: tf.Tensor, face: tf.Tensor) -> tf.Tensor:
    """``(B, RELIGHT_BANDS)`` each photo's SH light: the least-squares fit of one albedo under
    first-order SH shading (ridge :data:`RELIGHT_RIDGE` per face pixel) to the luminance of its
    face pixels.

    Args:
        images: ``(B, S, S, 3)`` photos in [0, 1].
        pixel_normals: ``(B, S, S, 3)`` (or ``(S, S, 3)``, one face for every photo) camera-space
            unit normals of the face at each pixel.
        face: ``(B, S, S)`` (or ``(S, S)``) 1 on the face pixels, 0 elsewhere.
    """
    batch = tf.shape(images)[0]
    weights = tf.broadcast_to(tf.cast(face, tf.float32), tf.shape(images)[:3])[..., None]
    pixel_normals = tf.broadcast_to(pixel_normals, tf.shape(images))
    design = tf.reshape(sh_basis(pixel_normals)[..., :RELIGHT_BANDS] * weights, [batch, -1, RELIGHT_BANDS])
    luminance = tf.reshape(tf.reduce_mean(images, -1, keepdims=True) * weights, [batch, -1, 1])
    count = tf.maximum(tf.reduce_sum(weights, [1, 2, 3]), 1.0)[:, None, None]
    normal = tf.matmul(design, design, transpose_a=True) + RELIGHT_RIDGE * count * tf.eye(RELIGHT_BANDS)
    return tf.linalg.solve(normal, tf.matmul(design, luminance, transpose_a=True))[..., 0]


def paste_turned_face(images: tf.Tensor, face: tf.Tensor, mask: tf.Tensor, region: tf.Tensor,
                      beyond_edge: tf.Tensor) -> tf.Tensor:
    """``(B, S, S, 3)`` photos with their turned faces pasted in.

    Args:
        images: ``(B, S, S, 3)`` the photos.
        face: ``(B, S, S, 3)`` the turned faces' colours, where ``mask`` ``(B, S, S, 1)`` is 1.
        region: ``(B, S, S, 1)`` (or ``(S, S, 1)``) 1 where the photo's own face was: what the turned
            face does not cover of it is filled from ``beyond_edge``.
        beyond_edge: ``(B, S, S, 2)`` positions of :func:`mirrored_beyond_edges` of ``region``.
    """
    uncovered = region * (1.0 - mask)
    return mask * face + uncovered * bilinear_sample(images, beyond_edge) + (1.0 - mask - uncovered) * images


class FaceProfiler:
    """Turn the faces of aligned photos (module docstring).

    Args:
        uv_model: the UV-3DMM; its hole-filled mean shape is the proxy.
        mean_landmarks5: ``(5, 2)`` pixel position of the aligned photos' mean 5 landmarks.
        image_size: side of the square photos in pixels.
        framing: one of :data:`tfface.training.config.PROFILE_FRAMINGS`.
        relight: whether to relight the turned faces (module docstring).

    Attributes:
        camera: ``(K, R, t)`` of the template placement (:func:`pretraining_targets`' camera).
        frontal_region: ``(S, S, 1)`` 1 where the frontal (unturned) face covers the photo.
    """

    def __init__(self, uv_model: UVMorphableModel, mean_landmarks5: np.ndarray, image_size: int,
                 framing: str = "centroid", relight: bool = False):
        if framing not in PROFILE_FRAMINGS:
            raise InputError(f"framing must be one of {PROFILE_FRAMINGS}, got {framing!r}")
        self.framing = framing
        model = uv_model.model
        frontal_target = pretraining_targets(uv_model, mean_landmarks5, image_size)
        self.image_size = int(image_size)
        self.camera = tuple(tf.constant(a) for a in (frontal_target.K, frontal_target.R, frontal_target.t))
        self._mean = tf.constant(model.mean, tf.float32)
        self._centre = tf.reduce_mean(self._mean, 0)
        self._triangles = tf.constant(model.triangles, tf.int32)
        self._vertex_uv = tf.constant(uv_model.vertex_uv, tf.float32)
        frontal, _ = project(self._mean[None], *(a[None] for a in self.camera))
        self._frontal_xy = frontal[0]  # (V, 2) where each surface point lies in the aligned photo
        landmarks68 = tf.constant(model.landmarks68, tf.int32)
        self._mean_landmarks68 = tf.gather(self._mean, landmarks68)
        self._frontal_box = box_of(tf.gather(self._frontal_xy, landmarks68))
        region = frontal_target.maps[..., 3]
        self.frontal_region = tf.constant(region[..., None])
        self._beyond_edge = mirrored_beyond_edges(tf.constant(region > 0)[None])[0]
        self.relight = bool(relight)
        if self.relight:
            self._init_relighting()

    def _init_relighting(self) -> None:
        """The proxy's model-space and frontal camera-space normals, and its frontal face pixels
        with their normals, from which each photo's light is estimated."""
        _, R, _ = self.camera
        self._normals = vertex_normals(self._mean[None], self._triangles)[0]  # (V, 3) model space
        self._frontal_normals = tf.linalg.matvec(R, self._normals)  # (V, 3) camera space
        fragments = rasterize(self._mean[None], self._triangles, *(a[None] for a in self.camera),
                              self.image_size, self.image_size)
        self._pixel_normals = tf.math.l2_normalize(interpolate(self._frontal_normals, self._triangles, fragments),
                                                   -1)[0]  # (S, S, 3)
        self._face_pixels = fragments.mask[0]  # (S, S)

    def shading_ratios(self, images: tf.Tensor, yaw: tf.Tensor, pitch: tf.Tensor) -> tf.Tensor:
        """``(B, V)`` ratio of each proxy vertex's shading turned by ``yaw`` and ``pitch`` ``(B,)``
        (radians) to its shading in the photo, under each photo's estimated light.

        Args:
            images: ``(B, S, S, 3)`` aligned photos in [0, 1].
        """
        light = estimate_light(images, self._pixel_normals, self._face_pixels)
        turned = tf.einsum("ij,bjk,vk->bvi", self.camera[1], turn_matrices(tf.cast(yaw, tf.float32),
                                                                           tf.cast(pitch, tf.float32)),
                           self._normals)  # (B, V, 3) camera space
        return shading_ratios(light, self._frontal_normals, turned)

    def _turned(self, points: tf.Tensor, yaw: tf.Tensor, pitch: tf.Tensor) -> tf.Tensor:
        """``(B, P, 3)``: ``(P, 3)`` points of the mean shape turned with it about its centroid by
        ``yaw`` and ``pitch`` ``(B,)`` (radians)."""
        yaw, pitch = tf.cast(yaw, tf.float32), tf.cast(pitch, tf.float32)
        return tf.einsum("bij,vj->bvi", turn_matrices(yaw, pitch), points - self._centre) + self._centre

    def _cameras(self, count: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The template placement's ``(K, R, t)`` repeated for ``count`` examples."""
        return tuple(tf.tile(a[None], tf.concat([[count], tf.ones_like(tf.shape(a))], 0)) for a in self.camera)

    def framing_transforms(self, yaw: tf.Tensor, pitch: tf.Tensor) -> tf.Tensor:
        """``(B, 3, 3)`` forward pixel similarities that frame the examples turned by ``yaw`` and
        ``pitch`` ``(B,)`` (radians): the identity for ``centroid`` framing; for ``landmark_box``, the
        scale and shift that move the turned proxy's 68-landmark box onto the frontal face's box
        (centre and longer side)."""
        count = tf.shape(tf.convert_to_tensor(yaw))[0]
        if self.framing == "centroid":
            return tf.eye(3, batch_shape=[count])
        landmarks = self._turned(self._mean_landmarks68, yaw, pitch)
        frontal_centre, frontal_side = self._frontal_box
        return box_framing(project(landmarks, *self._cameras(count))[0], frontal_centre[None], frontal_side,
                           self.image_size)

    def __call__(self, images: tf.Tensor, yaw: tf.Tensor, pitch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Turn ``(B, S, S, 3)`` aligned photos by ``yaw`` and ``pitch`` ``(B,)`` (radians).

        Returns:
            ``images`` ``(B, S, S, 3)`` with the turned faces and their target ``maps``
            ``(B, S, S, 4)``: u, v, depth and face region, as :func:`pretraining_targets` has them.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        batch = tf.shape(images)[0]
        turned = self._turned(self._mean, yaw, pitch)
        K, R, t = self._cameras(batch)
        fragments = rasterize(turned, self._triangles, K, R, t, self.image_size, self.image_size)
        mask = fragments.mask[..., None]
        source = interpolate(self._frontal_xy, self._triangles, fragments)
        uv = interpolate(self._vertex_uv, self._triangles, fragments)
        face = bilinear_sample(images, source)
        if self.relight:
            ratio = interpolate(self.shading_ratios(images, yaw, pitch)[..., None], self._triangles, fragments)
            face = tf.clip_by_value(face * ratio, 0.0, 1.0)
        beyond = tf.broadcast_to(self._beyond_edge, tf.concat([[batch], tf.shape(self._beyond_edge)], 0))
        out = paste_turned_face(images, face, mask, self.frontal_region, beyond)
        maps = tf.concat([uv, fragments.depth[..., None] / DISTANCE, mask], -1)
        return out, maps


def fitted_yaw(R: tf.Tensor) -> tf.Tensor:
    """``(...)`` unsigned yaw (radians) of fitted rotations ``R`` ``(..., 3, 3)`` (model to camera
    space): the angle between the model's forward axis and the viewing axis, in the horizontal plane."""
    return tf.atan2(tf.abs(R[..., 0, 2]), tf.abs(R[..., 2, 2]))


class FitProfiler:
    """Turn the faces of self-labelled photos on their own fits (module docstring, "Own fits").

    Where :class:`FaceProfiler` turns the one mean shape placed at the template, this turns each
    photo's fitted mesh under its fitted camera (:mod:`tfface.training.self_labels` keeps them):
    the proxy has the photo's own shape, expression and position, so the turned targets follow the
    face, as 3DDFA's profiling follows its fitted 3DMM. The mesh turns about its centroid, about the
    camera's axes (the fitted rotation ``R`` tells where they lie in model space), and each turned
    example is framed by its landmark box, moved onto the box of the fit's landmarks in the photo.

    Args:
        uv_model: the UV-3DMM the fits are of.
        image_size: side of the square photos in pixels.
        relight: whether to relight the turned faces (module docstring, "Relighting"; each photo's
            light is estimated from the face pixels its fit covers).
        surroundings: what fills the pixels the turned face does not cover, one of
            :data:`tfface.training.config.PROFILE_SURROUNDINGS`: ``mirrored`` keeps the photo, the
            photo's own face region filled from beyond its edges; ``turned`` turns the photo around
            the face with it (module docstring, "Surroundings").
    """

    def __init__(self, uv_model: UVMorphableModel, image_size: int, relight: bool = False,
                 surroundings: str = "mirrored"):
        if surroundings not in PROFILE_SURROUNDINGS:
            raise InputError(f"surroundings must be one of {PROFILE_SURROUNDINGS}, got {surroundings!r}")
        model = uv_model.model
        self.image_size = int(image_size)
        self.relight = bool(relight)
        self.surroundings = surroundings
        grid, grid_triangles = image_grid(self.image_size, SURROUND_GRID)
        self._grid = tf.constant(grid)
        self._grid_triangles = tf.constant(grid_triangles)
        self._triangles = tf.constant(model.triangles, tf.int32)
        self._vertex_uv = tf.constant(uv_model.vertex_uv, tf.float32)
        self._landmarks68 = tf.constant(model.landmarks68, tf.int32)

    def __call__(self, images: tf.Tensor, fits: dict[str, tf.Tensor], yaw: tf.Tensor,
                 pitch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Turn ``(B, S, S, 3)`` photos' fitted faces by ``yaw`` and ``pitch`` ``(B,)`` (radians).

        Args:
            fits: the photos' fits, as :func:`tfface.training.self_labels.label_photos` keeps them:
                ``vertices`` ``(B, V, 3)``, ``p_hat`` ``(B, 3, 3)``, ``q_hat`` ``(B, 3)``, ``R``
                ``(B, 3, 3)`` and the fits' ``maps`` ``(B, S, S, 4)`` (their face region is filled
                from beyond its edges where the turned face leaves it).

        Returns:
            ``images`` ``(B, S, S, 3)`` with the turned faces, their target ``maps`` ``(B, S, S, 4)``
            (u, v, depth in the fit's network units and face region, as the labels have them) and
            the ``(B, 3, 3)`` forward similarities that frame them (to apply to both).
        """
        images = tf.convert_to_tensor(images, tf.float32)
        vertices, R = tf.cast(fits["vertices"], tf.float32), tf.cast(fits["R"], tf.float32)
        p_hat, q_hat = tf.cast(fits["p_hat"], tf.float32), tf.cast(fits["q_hat"], tf.float32)
        camera = fit_camera(p_hat, q_hat)
        pixels, _ = project(vertices, *camera)  # (B, V, 2) each vertex in the photo
        turn = tf.linalg.matrix_transpose(R) @ turn_matrices(tf.cast(yaw, tf.float32), tf.cast(pitch, tf.float32)) @ R
        centre = tf.reduce_mean(vertices, 1, keepdims=True)
        turned = tf.einsum("bij,bvj->bvi", turn, vertices - centre) + centre
        fragments = rasterize(turned, self._triangles, *camera, self.image_size, self.image_size)
        mask = fragments.mask[..., None]
        face = bilinear_sample(images, interpolate(pixels, self._triangles, fragments))
        in_photo = None
        if self.relight or self.surroundings == "turned":
            in_photo = rasterize(vertices, self._triangles, *camera, self.image_size, self.image_size)
        if self.relight:
            model_normals = vertex_normals(vertices, self._triangles)
            normals = tf.einsum("bij,bvj->bvi", R, model_normals)  # camera space, as in the photo
            pixel_normals = tf.math.l2_normalize(interpolate(normals, self._triangles, in_photo), -1)
            ratio = shading_ratios(estimate_light(images, pixel_normals, in_photo.mask), normals,
                                   tf.einsum("bij,bvj->bvi", R @ turn, model_normals))
            face = tf.clip_by_value(face * interpolate(ratio[..., None], self._triangles, fragments), 0.0, 1.0)
        region = tf.cast(fits["maps"][..., 3:4] > 0.5, tf.float32)
        out = paste_turned_face(images, face, mask, region, mirrored_beyond_edges(region[..., 0] > 0))
        if self.surroundings == "turned":
            around, sampled_face = self.turned_surroundings(images, in_photo, p_hat, camera, R, centre, yaw, pitch)
            pasted = tf.maximum(mask, sampled_face)  # no second face: where the grid shows the photo's face
            out = pasted * out + (1.0 - pasted) * around
        uv = interpolate(self._vertex_uv, self._triangles, fragments)
        maps = tf.concat([uv * mask, fragments.depth[..., None] * mask, mask], -1)
        landmarks = tf.gather(pixels, self._landmarks68, axis=1)
        turned_landmarks, _ = project(tf.gather(turned, self._landmarks68, axis=1), *camera)
        centre_in_photo, side_in_photo = box_of(landmarks)
        framing = box_framing(turned_landmarks, centre_in_photo, side_in_photo, self.image_size)
        return out, maps, framing

    def turned_surroundings(self, images: tf.Tensor, in_photo: Fragments, p_hat: tf.Tensor,
                            camera: tuple[tf.Tensor, tf.Tensor, tf.Tensor], R: tf.Tensor, centre: tf.Tensor,
                            yaw: tf.Tensor, pitch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(B, S, S, 3)`` photos turned about their fitted faces (module docstring, "Surroundings").

        Args:
            images: ``(B, S, S, 3)`` the photos.
            in_photo: the fits' :class:`~tfface.render.rasterizer.Fragments` in the photos (their
                camera-space depth and face region).
            p_hat: ``(B, 3, 3)`` the fits' inverse cameras, ``camera`` their ``(K, R, t)`` with ``K = I``
                (:func:`tfface.training.self_labels.fit_camera`), ``R`` ``(B, 3, 3)`` their rotations
                and ``centre`` ``(B, 1, 3)`` the model-space point the faces turn about.
            yaw, pitch: ``(B,)`` the faces' turn (radians).

        Returns:
            ``(B, S, S, 3)`` the photos rendered through the turned grid mesh (pixels it leaves
            uncovered keep the photo) and ``(B, S, S, 1)`` 1 where that shows the photo's face
            region, which :meth:`__call__` fills as the ``mirrored`` surroundings do.
        """
        region = in_photo.mask[..., None]
        sigma = SURROUND_SPREAD * self.image_size
        weight = gaussian_blur(region, sigma)
        face_depth = tf.reduce_sum(in_photo.depth[..., None] * region, [1, 2, 3]) / tf.maximum(
            tf.reduce_sum(region, [1, 2, 3]), 1.0)
        spread = gaussian_blur(in_photo.depth[..., None] * region, sigma) / tf.maximum(weight, 1e-6)
        depth = tf.where(region > 0, in_photo.depth[..., None],
                         tf.where(weight > 1e-6, spread, face_depth[:, None, None, None]))
        batch = tf.shape(images)[0]
        grid = tf.broadcast_to(self._grid[None], tf.stack([batch, tf.shape(self._grid)[0], 2]))
        z = bilinear_sample(depth, grid)  # (B, G, 1)
        follow = bilinear_sample(tf.clip_by_value(2.0 * weight, 0.0, 1.0), grid)[..., 0]  # 1 at the face's edge
        # Each grid vertex at its depth in camera space (K = I), then in model space.
        points = tf.einsum("bij,bgj->bgi", p_hat, z * tf.concat([grid, tf.ones_like(z)], -1) - camera[2][:, None])
        turns = turn_matrices(tf.cast(yaw, tf.float32)[:, None] * follow, tf.cast(pitch, tf.float32)[:, None] * follow)
        turns = tf.linalg.matrix_transpose(R)[:, None] @ turns @ R[:, None]  # (B, G, 3, 3)
        turned = tf.einsum("bgij,bgj->bgi", turns, points - centre) + centre
        fragments = rasterize(turned, self._grid_triangles, *camera, self.image_size, self.image_size)
        covered = fragments.mask[..., None]
        centres = tf.cast(tf.range(self.image_size), tf.float32) + 0.5
        pixels = tf.stack(tf.meshgrid(centres, centres), -1)[None]
        source = covered * interpolate(self._grid, self._grid_triangles, fragments) + (1.0 - covered) * pixels
        interior = 1.0 - tf.nn.max_pool2d(1.0 - region, 2 * SURROUND_EDGE + 1, 1, "SAME")
        return bilinear_sample(images, source), tf.cast(bilinear_sample(interior, source) > 0.5, tf.float32)
