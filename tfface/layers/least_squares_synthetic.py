"""Synthetic least-squares problems with known answers, made from a morphable model.

Used by the exactness tests and the noise-curve tool of the least-squares layers. Everything
is computed in float64 NumPy from the model: random coefficients, a random perspective camera
``(K, R, t, psi)`` and samples at random barycentric points of random triangles, where the
pixel, the depth and the sampled model rows are exact (the sampled mean and basis are the same
barycentric blends of vertex rows that the UV-3DMM sampling produces). Photometric problems
add random albedo coefficients and inverse-SH lighting on top, with normals from
:func:`tfface.layers.photometric.sample_normals`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfface import paths
from tfface.geometry.camera import decompose_inverse_camera
from tfface.geometry.sh import sh_basis
from tfface.layers.geometric import solve_geometry
from tfface.layers.geometric_variants import solve_geometry_known_intrinsics
from tfface.layers.photometric import neutral_lighting, sample_normals, solve_photometry

#: The frontal rotation of the conventions: camera looks along +Z, image y down.
FRONTAL = np.diag([1.0, -1.0, -1.0])


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A linear shape model: ``vertices = mean + sum_k m_k basis[k]`` (float64, mm)."""

    mean: np.ndarray  # (V, 3)
    basis: np.ndarray  # (K, V, 3)
    triangles: np.ndarray  # (T, 3) int32


def load_ict_geometry(
    num_identity: int, num_expression: int, path: str | Path | None = None
) -> Geometry:
    """The narrow ICT face (vertices 0..6705) with its leading identity and expression modes."""
    with np.load(path or paths.default_model_path()) as data:
        count = int(data["narrow_vertex_count"])
        basis = np.concatenate(
            [data["identity_basis"][:num_identity, :count], data["expression_basis"][:num_expression, :count]]
        )
        triangles = data["triangles"]
        triangles = triangles[np.all(triangles < count, axis=1)]
        return Geometry(data["mean"][:count].astype(np.float64), basis.astype(np.float64), triangles.astype(np.int32))


def random_rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """A rotation about a random axis by an angle up to ``max_angle_deg``, times :data:`FRONTAL`."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    turn = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    return FRONTAL @ turn


def random_cameras(rng: np.random.Generator, batch: int, image_size: float = 224.0) -> dict[str, np.ndarray]:
    """Random ``K`` (B, 3, 3), ``R`` (B, 3, 3), ``t`` (B, 3) mm and ``psi`` (B,).

    Focal lengths 1.5-3 image widths (with up to 5 % anisotropy and a small skew), principal
    point within 10 % of the image centre, face rotated up to 30 degrees, 400-900 mm away,
    depth scale ``psi`` log-uniform in [1e-3, 10].
    """
    K = np.zeros((batch, 3, 3))
    focal = rng.uniform(1.5, 3.0, batch) * image_size
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal * rng.uniform(0.95, 1.05, batch)
    K[:, 0, 1] = rng.uniform(-0.01, 0.01, batch) * focal
    K[:, :2, 2] = image_size / 2 + rng.uniform(-0.1, 0.1, (batch, 2)) * image_size
    K[:, 2, 2] = 1.0
    R = np.stack([random_rotation(rng, 30.0) for _ in range(batch)])
    t = np.stack([rng.uniform(-30, 30, batch), rng.uniform(-30, 30, batch), rng.uniform(400, 900, batch)], -1)
    psi = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), batch))
    return {"K": K, "R": R, "t": t, "psi": psi}


@dataclasses.dataclass(frozen=True)
class GeometricProblem:
    """Inputs and answers of one batch of geometric solves (float64 NumPy).

    Inputs: ``pixels`` (B, P, 2), ``depth`` (B, P), ``mean`` (B, P, 3), ``basis`` (B, P, 3, K).
    Answers: ``coefficients`` (B, K), ``K``, ``R``, ``t``, ``psi``. Sampling record:
    ``vertex_ids`` (B, P, 3), ``barycentrics`` (B, P, 3), ``vertices`` (B, V, 3) the true shapes.
    """

    pixels: np.ndarray
    depth: np.ndarray
    mean: np.ndarray
    basis: np.ndarray
    coefficients: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    psi: np.ndarray
    vertex_ids: np.ndarray
    barycentrics: np.ndarray
    vertices: np.ndarray


def geometric_problem(
    geometry: Geometry,
    rng: np.random.Generator,
    batch: int,
    num_samples: int,
    coefficient_scale: float = 1.0,
    coefficients: np.ndarray | None = None,
) -> GeometricProblem:
    """Exact samples of random shapes seen by random cameras (see the module docstring).

    ``coefficients`` (B, K) fixes the shapes; by default they are ``N(0, coefficient_scale^2)``.
    """
    cameras = random_cameras(rng, batch)
    if coefficients is None:
        coefficients = coefficient_scale * rng.normal(size=(batch, geometry.basis.shape[0]))
    vertices = geometry.mean + np.einsum("bk,kvc->bvc", coefficients, geometry.basis)
    faces = rng.integers(0, len(geometry.triangles), (batch, num_samples))
    vertex_ids = geometry.triangles[faces]
    barycentrics = rng.dirichlet(np.ones(3), (batch, num_samples))
    mean = np.einsum("bpi,bpic->bpc", barycentrics, geometry.mean[vertex_ids])
    basis = np.einsum("bpi,kbpic->bpck", barycentrics, geometry.basis[:, vertex_ids])
    points = mean + np.einsum("bpck,bk->bpc", basis, coefficients)
    camera_points = np.einsum("bij,bpj->bpi", cameras["R"], points) + cameras["t"][:, None]
    homogeneous = np.einsum("bij,bpj->bpi", cameras["K"], camera_points)
    pixels = homogeneous[..., :2] / homogeneous[..., 2:]
    depth = cameras["psi"][:, None] * camera_points[..., 2]
    return GeometricProblem(
        pixels, depth, mean, basis, coefficients, cameras["K"], cameras["R"], cameras["t"],
        cameras["psi"], vertex_ids.astype(np.int32), barycentrics, vertices,
    )


def add_geometric_noise(
    problem: GeometricProblem, rng: np.random.Generator, level: float
) -> GeometricProblem:
    """Perturb pixels and depths by Gaussian noise of ``level`` times their spread.

    The spread is the RMS deviation from the per-image mean (of pixel positions, of depths), so
    ``level = 0.05`` moves pixels by 5 % of the face's size and depths by 5 % of its relief.
    """
    def jitter(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        spread = np.sqrt(np.mean(np.square(values - values.mean(axis=axes, keepdims=True)), axis=axes, keepdims=True))
        return values + level * spread * rng.normal(size=values.shape)

    return dataclasses.replace(
        problem, pixels=jitter(problem.pixels, (1, 2)), depth=jitter(problem.depth, (1,))
    )


@dataclasses.dataclass(frozen=True)
class PhotometricProblem:
    """Inputs and answers of one batch of photometric solves (float64 NumPy).

    Inputs: ``image`` (B, P, 3), ``normals`` (B, P, 3) camera space, ``albedo_mean`` (B, P, 3),
    ``albedo_basis`` (B, P, 3, Kr). Answers: ``lighting`` (B, 3, 9) inverse-SH coefficients,
    ``coefficients`` (B, Kr), ``albedo`` (B, P, 3).
    """

    image: np.ndarray
    normals: np.ndarray
    albedo_mean: np.ndarray
    albedo_basis: np.ndarray
    lighting: np.ndarray
    coefficients: np.ndarray
    albedo: np.ndarray


def random_albedo_model(
    rng: np.random.Generator, num_vertices: int, num_modes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A random per-vertex albedo model: mean ``(V, 3)`` in [0.3, 0.7], modes ``(Kr, V, 3)``
    of RMS 0.03."""
    mean = rng.uniform(0.3, 0.7, (num_vertices, 3))
    return mean, 0.03 * rng.normal(size=(num_modes, num_vertices, 3))


def photometric_problem(
    geometry: GeometricProblem,
    triangles: np.ndarray,
    albedo_model: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    lighting_sigma: float = 0.1,
) -> PhotometricProblem:
    """Pixel colours of the geometric problem's samples under random inverse-SH lighting.

    Lighting: unit inverse shading plus ``N(0, lighting_sigma^2)`` coefficients; shading is
    checked to stay above 0.2 at every sample (redrawn otherwise). Pixel colour is
    ``albedo / inverse_shading`` exactly.
    """
    albedo_mean, albedo_basis = albedo_model
    batch = geometry.pixels.shape[0]
    normals = sample_normals(
        tf.constant(geometry.vertices), tf.constant(triangles), tf.constant(geometry.vertex_ids),
        tf.constant(geometry.barycentrics), tf.constant(geometry.R),
    ).numpy()
    coefficients = rng.normal(size=(batch, albedo_basis.shape[0]))
    mean = np.einsum("bpi,bpic->bpc", geometry.barycentrics, albedo_mean[geometry.vertex_ids])
    basis = np.einsum("bpi,kbpic->bpck", geometry.barycentrics, albedo_basis[:, geometry.vertex_ids])
    albedo = mean + np.einsum("bpck,bk->bpc", basis, coefficients)
    sh = sh_basis(tf.constant(normals)).numpy()
    while True:
        lighting = neutral_lighting(tf.float64).numpy() + lighting_sigma * rng.normal(size=(batch, 3, 9))
        shading = np.einsum("bpi,bci->bpc", sh, lighting)
        if shading.min() > 0.2:
            break
    return PhotometricProblem(albedo / shading, normals, mean, basis, lighting, coefficients, albedo)


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-batch-entry ``|estimate - truth| / |truth|`` (Frobenius over the trailing axes)."""
    axes = tuple(range(1, truth.ndim))
    return np.linalg.norm(estimate - truth, axis=axes) / np.linalg.norm(truth, axis=axes)


def rotation_error_degrees(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Angle (degrees) of ``estimate^T truth`` per batch entry, accurate for small angles."""
    chord = np.linalg.norm(estimate - truth, axis=(1, 2)) / (2 * np.sqrt(2))
    return np.degrees(2 * np.arcsin(np.clip(chord, 0, 1)))


def noisy_fit_errors(
    geometry: Geometry,
    albedo_model: tuple[np.ndarray, np.ndarray],
    level: float,
    batch: int,
    samples: int,
    shape_weight: float,
    seed: int,
) -> dict[str, float]:
    """Median errors of the geometric and then photometric solve on one noisy synthetic batch.

    Pixels and depths get noise ``level`` (:func:`add_geometric_noise`), pixel colours a relative
    Gaussian noise ``level``. The photometric solve uses normals of the *fitted* shape rotated by
    the *fitted* camera. Sample weights are 1, shape modes have ``alpha^2 = shape_weight``, the
    albedo and lighting priors are negligible (1e-6).

    Returns:
        dict: ``shape (mm)`` RMS vertex error, ``coefficients``, ``K``, ``t``, ``psi``,
            ``lighting``, ``albedo`` relative errors and ``R (deg)``; ``shape|K (mm)`` and
            ``R|K (deg)`` of the known-intrinsics variant on the same samples.
    """
    rng = np.random.default_rng(seed)
    truth = geometric_problem(geometry, rng, batch, samples)
    colours = photometric_problem(truth, geometry.triangles, albedo_model, rng)
    noisy = add_geometric_noise(truth, rng, level)
    f32 = lambda a: tf.constant(a, tf.float32)  # noqa: E731
    weights = tf.ones([batch, samples])
    samples_in = [f32(noisy.pixels), f32(noisy.depth), weights, f32(noisy.mean), f32(noisy.basis)]
    shape_weights = tf.fill([geometry.basis.shape[0]], shape_weight)
    fit = solve_geometry(*samples_in, shape_weights)
    known = solve_geometry_known_intrinsics(*samples_in, shape_weights, f32(truth.K))
    K, R, t, psi = (v.numpy() for v in decompose_inverse_camera(fit["p_hat"], fit["q_hat"]))
    vertices = geometry.mean + np.einsum("bk,kvc->bvc", fit["coefficients"].numpy(), geometry.basis)
    normals = sample_normals(
        f32(vertices), tf.constant(geometry.triangles), tf.constant(truth.vertex_ids),
        f32(truth.barycentrics), f32(R),
    )
    image = colours.image * (1 + level * rng.normal(size=colours.image.shape))
    light = solve_photometry(
        f32(image), normals, weights, f32(colours.albedo_mean), f32(colours.albedo_basis),
        tf.fill([albedo_model[1].shape[0]], 1e-6), lighting_weight=1e-6,
    )
    def shape_rms(coefficients: np.ndarray) -> np.ndarray:
        fitted = geometry.mean + np.einsum("bk,kvc->bvc", coefficients, geometry.basis)
        return np.sqrt(np.mean(np.square(fitted - truth.vertices), axis=(1, 2)))

    errors = {
        "shape (mm)": shape_rms(fit["coefficients"].numpy()),
        "coefficients": relative_error(fit["coefficients"].numpy(), truth.coefficients),
        "K": relative_error(K, truth.K),
        "R (deg)": rotation_error_degrees(R, truth.R),
        "t": relative_error(t, truth.t),
        "psi": relative_error(psi[:, None], truth.psi[:, None]),
        "lighting": relative_error(light["lighting"].numpy(), colours.lighting),
        "albedo": relative_error(light["albedo"].numpy(), colours.albedo),
        "shape|K (mm)": shape_rms(known["coefficients"].numpy()),
        "R|K (deg)": rotation_error_degrees(known["R"].numpy(), truth.R),
    }
    return {name: float(np.median(values)) for name, values in errors.items()}
