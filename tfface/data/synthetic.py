"""Synthetic face images with exact ground truth, rendered from a UV-3DMM.

Each sample draws a random identity, expression and albedo (coefficients ~ N(0, sigma^2)), a head
pose (yaw up to +-60 degrees, moderate pitch, any in-plane roll), a focal length, an SH lighting
(supplement D: N(0, 0.2^2) coefficients plus ambient 0.9, with a small per-channel tint) and a
background (procedural noise, gradient or stripes, or a random other image), and renders the
hole-filled mesh of the UV-3DMM (so mouth and eyes are closed surfaces and every face pixel has a
correspondence).

Sample dict (``S`` = image size; all float32 unless noted). Training reads only ``image``;
everything else is ground truth for evaluation:

=========================  ============  ====================================================
key                        shape         meaning
=========================  ============  ====================================================
image                      (S, S, 3)     rendered RGB in [0, 1]
correspondence             (S, S, 2)     (u, v) of the visible surface point, 0 on background
depth                      (S, S)        camera-space Z (mm) at the pixel centre, 0 on background
mask                       (S, S)        1 where the face is visible
K, R                       (3, 3)        intrinsics and rotation (``X_cam = R X + t``)
t                          (3,)          translation (mm)
shape_coefficients         (Ks,)         identity coefficients
expression_coefficients    (Ke,)         expression coefficients
albedo_coefficients        (Kr,)         albedo coefficients
lighting                   (9, 3)        SH coefficients per colour channel (camera-space normals)
landmarks68                (68, 2)       projected landmark vertices (pixels)
landmarks5                 (5, 2)        5 landmarks from the 68 (``LANDMARK5_GROUPS``)
=========================  ============  ====================================================

Everything is TensorFlow and stateless-random: sample ``i`` of seed ``s`` is the same whatever
the order of evaluation, and whatever the batch size up to float rounding (batched matrix
products may round differently).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry import camera
from tfface.geometry.sh import random_sh_lighting
from tfface.morphable.model import LANDMARK5_GROUPS
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.render.rasterizer import interpolate
from tfface.render.shader import render

if TYPE_CHECKING:
    import numpy.typing as npt

#: The sample dict's keys in the order of the module docstring.
SAMPLE_KEYS = ("image", "correspondence", "depth", "mask", "K", "R", "t", "shape_coefficients",
               "expression_coefficients", "albedo_coefficients", "lighting", "landmarks68", "landmarks5")

#: Frontal view: camera looks along +Z, image y down, the face (+z) looks at the camera.
FRONTAL = np.diag([1.0, -1.0, -1.0]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Ranges of the random scene parameters.

    Attributes:
        image_size: output side S in pixels.
        max_yaw, max_pitch, max_roll: uniform pose ranges in degrees (roll 180 = any in-plane angle).
        focal_range: focal length as a multiple of S (1.0 is a 53 degree field of view).
        face_fraction: range of the face's largest extent as a fraction of S.
        max_shift: maximum shift of the face centre from the image centre, fraction of S.
        shape_sigma, expression_sigma, albedo_sigma: standard deviation of the coefficients.
        light_sigma, ambient: SH lighting of supplement D; tint: std of per-channel light gain.
        background_image_probability: share of backgrounds taken from other images when a
            background image source is given.
    """

    image_size: int = 224
    max_yaw: float = 60.0
    max_pitch: float = 25.0
    max_roll: float = 180.0
    focal_range: tuple[float, float] = (1.0, 4.0)
    face_fraction: tuple[float, float] = (0.45, 0.8)
    max_shift: float = 0.08
    shape_sigma: float = 1.0
    expression_sigma: float = 1.0
    albedo_sigma: float = 1.0
    light_sigma: float = 0.2
    ambient: float = 0.9
    tint: float = 0.08
    background_image_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise InputError(f"image_size must be at least 8, got {self.image_size}")
        for name in ("focal_range", "face_fraction"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise InputError(f"{name} must satisfy 0 < low <= high, got {(low, high)}")


def _rotation_xyz(yaw, pitch, roll) -> tf.Tensor:
    """``(B, 3, 3)`` head rotations ``Rz(roll) Rx(pitch) Ry(yaw)`` (radians) in model space."""
    zero, one = tf.zeros_like(yaw), tf.ones_like(yaw)

    def matrix(rows):
        return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)

    cy, sy, cp, sp, cr, sr = tf.cos(yaw), tf.sin(yaw), tf.cos(pitch), tf.sin(pitch), tf.cos(roll), tf.sin(roll)
    ry = matrix([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rx = matrix([[one, zero, zero], [zero, cp, -sp], [zero, sp, cp]])
    rz = matrix([[cr, -sr, zero], [sr, cr, zero], [zero, zero, one]])
    return rz @ rx @ ry


def landmarks5_matrix(dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """``(5, 68)`` averaging matrix: ``landmarks5 = M @ landmarks68`` (``LANDMARK5_GROUPS``)."""
    matrix = np.zeros((len(LANDMARK5_GROUPS), 68), dtype)
    for row, group in enumerate(LANDMARK5_GROUPS):
        matrix[row, list(group)] = 1.0 / len(group)
    return matrix


def procedural_backgrounds(seed: tf.Tensor, batch_size: int, size: int) -> tf.Tensor:
    """``(B, S, S, 3)`` random clutter in [0, 1]: a base layer with texture detail on top.

    The base is smooth colour noise, a linear colour gradient or stripes; every image then gets
    colour texture at three scales (cells of about 24, 8 and 2 pixels; random strength) and
    pixel noise. The detail matters for training: a smooth background is explained by the
    photometric model (a face stretched over it, lit by inverse SH), and the unsupervised loss
    then spreads the face over the whole image (the failure of supplement M). Photographs are
    cluttered; these textures are too.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 10)

    def smooth_noise(cells, key):
        coarse = tf.random.stateless_uniform([batch_size, cells, cells, 3], key)
        return tf.image.resize(coarse, [size, size], method="bicubic")

    noise = smooth_noise(6, seeds[0])
    colours = tf.random.stateless_uniform([batch_size, 2, 3], seeds[2])
    angle = tf.random.stateless_uniform([batch_size], seeds[3], 0.0, 2.0 * math.pi)
    grid = (tf.cast(tf.range(size), tf.float32) + 0.5) / size - 0.5
    x, y = grid[None, None, :], grid[None, :, None]
    along = x * tf.cos(angle)[:, None, None] + y * tf.sin(angle)[:, None, None]  # (B, S, S)
    ramp = tf.clip_by_value(along + 0.5, 0.0, 1.0)
    frequency = tf.random.stateless_uniform([batch_size, 1, 1], seeds[4], 4.0, 30.0)
    stripes = 0.5 + 0.5 * tf.sin(2.0 * math.pi * frequency * along)

    def mix(weight):
        return colours[:, None, None, 0] * (1.0 - weight[..., None]) + colours[:, None, None, 1] * weight[..., None]

    kind = tf.random.stateless_uniform([batch_size], seeds[5], 0, 3, dtype=tf.int32)[:, None, None, None]
    base = tf.where(kind == 0, noise, tf.where(kind == 1, mix(ramp), mix(stripes)))
    strength = tf.random.stateless_uniform([batch_size, 1, 1, 1], seeds[9], 0.5, 1.5)
    detail = sum(amplitude * (smooth_noise(max(2, size // cell), key) - 0.5)
                 for amplitude, cell, key in ((0.4, 24, seeds[6]), (0.3, 8, seeds[7]), (0.2, 2, seeds[8])))
    textures = base + strength * detail + 0.04 * tf.random.stateless_normal([batch_size, size, size, 3], seeds[1])
    return tf.clip_by_value(textures, 0.0, 1.0)


class SyntheticFaces:
    """Random faces rendered from a UV-3DMM, with ground truth (module docstring).

    Args:
        uv_model: the flattened model; its hole-filled ``model`` is rendered.
        config: scene parameter ranges.
    """

    def __init__(self, uv_model: UVMorphableModel, config: SynthesisConfig = SynthesisConfig()):
        self.uv_model = uv_model
        self.config = config
        model = uv_model.model
        self._mean = tf.constant(model.mean)
        self._geometry_basis = tf.constant(
            np.concatenate([model.shape_basis, model.expression_basis]).reshape(-1, model.num_vertices * 3))
        self._albedo_mean = tf.constant(model.albedo_mean)
        self._albedo_basis = tf.constant(model.albedo_basis.reshape(model.num_albedo, -1))
        self._triangles = tf.constant(model.triangles)
        self._vertex_uv = tf.constant(uv_model.vertex_uv)
        self._landmarks68 = tf.constant(model.landmarks68)
        self._landmarks5 = tf.constant(landmarks5_matrix())
        extent = model.mean.max(axis=0) - model.mean.min(axis=0)
        self._centre = tf.constant((model.mean.max(axis=0) + model.mean.min(axis=0)) / 2.0)
        self._face_size = float(extent[:2].max())

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(Ks, Ke, Kr)``: the lengths of the coefficient vectors."""
        m = self.uv_model.model
        return m.num_shape, m.num_expression, m.num_albedo

    def sample_parameters(self, seeds: tf.Tensor) -> dict:
        """Random scene parameters for per-sample stateless ``seeds`` ``(B, 2)`` int64.

        Returns:
            dict with ``shape_coefficients``, ``expression_coefficients``, ``albedo_coefficients``,
            ``lighting``, ``K``, ``R``, ``t`` (shapes as in the module docstring, batched) and
            ``texture_seed`` ``(B, 2)`` int64 for the background.
        """
        c = self.config
        ks, ke, kr = self.sizes

        def one(seed):
            parts = tf.random.experimental.stateless_split(seed, 5)
            normals = tf.random.stateless_normal([ks + ke + kr], parts[0])
            uniforms = tf.random.stateless_uniform([10], parts[1])
            lighting = random_sh_lighting((), parts[2], sigma=c.light_sigma, ambient=c.ambient)
            return normals, uniforms, lighting, parts[3]

        normals, u, base_light, texture_seeds = tf.map_fn(
            one, tf.cast(seeds, tf.int64),
            fn_output_signature=(tf.float32, tf.float32, tf.float32, tf.int64))
        coefficients = {
            "shape_coefficients": c.shape_sigma * normals[:, :ks],
            "expression_coefficients": c.expression_sigma * normals[:, ks:ks + ke],
            "albedo_coefficients": c.albedo_sigma * normals[:, ks + ke:],
        }

        def span(i, low, high):
            return low + (high - low) * u[:, i]

        deg = math.pi / 180.0
        pose = _rotation_xyz(span(0, -c.max_yaw, c.max_yaw) * deg, span(1, -c.max_pitch, c.max_pitch) * deg,
                             span(2, -c.max_roll, c.max_roll) * deg)
        rotation = tf.constant(FRONTAL) @ pose
        size = float(c.image_size)
        focal = size * tf.exp(span(3, math.log(c.focal_range[0]), math.log(c.focal_range[1])))
        fraction = span(4, *c.face_fraction)
        distance = focal * self._face_size / (fraction * size)
        shift = tf.stack([span(5, -c.max_shift, c.max_shift), span(6, -c.max_shift, c.max_shift)], -1) * size
        zero, one = tf.zeros_like(focal), tf.ones_like(focal)
        K = tf.stack([tf.stack([focal, zero, zero + size / 2], -1), tf.stack([zero, focal, zero + size / 2], -1),
                      tf.stack([zero, zero, one], -1)], axis=-2)
        # Face centre at depth `distance`, seen `shift` pixels off the principal point.
        target = tf.concat([shift * (distance / focal)[:, None], distance[:, None]], -1)
        t = target - tf.linalg.matvec(rotation, self._centre)
        gains = 1.0 + c.tint * (2.0 * u[:, 7:10] - 1.0) * math.sqrt(3.0)
        lighting = base_light[:, :, None] * gains[:, None, :]
        return {**coefficients, "lighting": lighting, "K": K, "R": rotation, "t": t,
                "texture_seed": texture_seeds}

    def render(self, parameters: dict, background: tf.Tensor | None = None) -> dict:
        """Render a batch of scenes (:meth:`sample_parameters`) into sample dicts.

        Args:
            parameters: batched parameters; ``texture_seed`` ``(B, 2)`` picks each procedural texture
                and whether ``background`` is used instead.
            background: optional ``(B, S, S, 3)`` background images used with probability
                ``config.background_image_probability`` instead of the procedural textures.

        Returns:
            Batched sample dicts (module docstring).
        """
        size = self.config.image_size
        batch = tf.shape(parameters["K"])[0]
        geometry = tf.concat([parameters["shape_coefficients"], parameters["expression_coefficients"]], -1)
        vertices = self._mean + tf.reshape(geometry @ self._geometry_basis, [batch, -1, 3])
        albedo = self._albedo_mean + tf.reshape(parameters["albedo_coefficients"] @ self._albedo_basis,
                                                [batch, -1, 3])
        albedo = tf.clip_by_value(albedo, 0.0, 1.0)

        def texture(seed):
            image = procedural_backgrounds(seed, 1, size)[0]
            use_image = tf.random.stateless_uniform([], seed + 1) < self.config.background_image_probability
            return image, use_image

        textures, use_image = tf.map_fn(texture, parameters["texture_seed"],
                                        fn_output_signature=(tf.float32, tf.bool))
        if background is not None:
            textures = tf.where(use_image[:, None, None, None], tf.convert_to_tensor(background, tf.float32),
                                textures)
        K, R, t = parameters["K"], parameters["R"], parameters["t"]
        rendering = render(vertices, self._triangles, albedo, K, R, t, parameters["lighting"], size, size, textures)
        fragments = rendering.fragments
        landmarks68, _ = camera.project(tf.gather(vertices, self._landmarks68, axis=1), K, R, t)
        sample = {key: value for key, value in parameters.items() if key != "texture_seed"}
        sample.update({
            "image": rendering.image,
            "correspondence": interpolate(self._vertex_uv, self._triangles, fragments),
            "depth": fragments.depth,
            "mask": fragments.mask,
            "landmarks68": landmarks68,
            "landmarks5": tf.einsum("fl,bld->bfd", self._landmarks5, landmarks68),
        })
        return {key: sample[key] for key in SAMPLE_KEYS}

    def dataset(self, count: int | None = None, seed: int = 0, batch_size: int = 8,
                backgrounds: tf.data.Dataset | None = None) -> tf.data.Dataset:
        """A ``tf.data`` source of unbatched sample dicts.

        Args:
            count: number of samples (None: endless).
            seed: sample ``i`` is determined by ``(seed, i)``.
            batch_size: how many samples are rendered together (speed only, not content).
            backgrounds: optional endless dataset of ``{"image": (S, S, 3)}`` (e.g. an image folder)
                used as background images.
        """
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        indices = tf.data.Dataset.range(count) if count is not None else tf.data.Dataset.range(2**62)
        batches = indices.batch(batch_size)
        def generate(index, background=None):
            seeds = tf.stack([tf.fill(tf.shape(index), tf.cast(seed, tf.int64)), index], -1)
            if background is not None:  # the last batch of indices may be short
                background = background[:tf.shape(index)[0]]
            return self.render(self.sample_parameters(seeds), background)

        if backgrounds is not None:
            images = backgrounds.repeat().map(lambda example: example["image"]).batch(batch_size)
            batches = tf.data.Dataset.zip(batches, images)
        return batches.map(generate, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
