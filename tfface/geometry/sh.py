r"""Real spherical harmonics of order <= 2 and the inverse-SH lighting model (supplement D).

Conventional SH lighting shades a surface of unit normal :math:`n` by
:math:`s(n) = Y(n) \cdot l` with the 9 basis values :math:`Y(n)` of :func:`sh_basis` and one
coefficient vector :math:`l` (9,) per colour channel: ``shading = sh_basis(n) @ l``, and a pixel
is ``albedo * shading``. The inverse model of the paper instead writes
``albedo = pixel * inverse_shading`` with ``inverse_shading = sh_basis(n) @ l_inv``, which is
linear in the unknowns of the photometric least squares; :func:`fit_inverse_sh` finds the
``l_inv`` whose inverse shading best matches :math:`1 / s(n)` over the sphere.

Basis order and constants (orthonormal on the unit sphere, :math:`\int Y_i Y_j = \delta_{ij}`),
for a unit normal :math:`n = (x, y, z)`, index ``i`` = :math:`(l, m)` in order of ``l`` then
``m = -l..l``:

===  ==========  =====================================================
 i   (l, m)      Y_i(n)
===  ==========  =====================================================
 0   (0,  0)     c0 = 1 / (2 sqrt(pi))                  ~ 0.282095
 1   (1, -1)     c1 y,   c1 = sqrt(3 / (4 pi))          ~ 0.488603
 2   (1,  0)     c1 z
 3   (1,  1)     c1 x
 4   (2, -2)     c2 x y, c2 = sqrt(15 / (4 pi))         ~ 1.092548
 5   (2, -1)     c2 y z
 6   (2,  0)     c3 (3 z^2 - 1), c3 = sqrt(5 / (16 pi)) ~ 0.315392
 7   (2,  1)     c2 x z
 8   (2,  2)     c4 (x^2 - y^2), c4 = sqrt(15 / (16 pi)) ~ 0.546274
===  ==========  =====================================================

The basis is a polynomial in ``n``: it does not renormalise its input. No Lambertian
convolution factors are folded in: ``l`` are the coefficients of the shading itself.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfface.errors import InputError

__all__ = [
    "SH_CONSTANTS",
    "fit_inverse_sh",
    "fit_sh",
    "inverse_lighting_errors",
    "random_sh_lighting",
    "sample_sphere",
    "sh_basis",
]

#: (c0, c1, c2, c3, c4) of the table in the module docstring.
SH_CONSTANTS = (
    0.5 / math.sqrt(math.pi),
    math.sqrt(3.0 / (4.0 * math.pi)),
    math.sqrt(15.0 / (4.0 * math.pi)),
    math.sqrt(5.0 / (16.0 * math.pi)),
    math.sqrt(15.0 / (16.0 * math.pi)),
)


def _seed_pair(seed: int | tf.Tensor) -> tf.Tensor:
    """A stateless-random seed of shape (2,) from an int or a (2,) tensor."""
    seed = tf.cast(seed, tf.int64)
    return seed if seed.shape.rank == 1 else tf.stack([seed, tf.constant(0, tf.int64)])


def _shade(coefficients: tf.Tensor, basis: tf.Tensor) -> tf.Tensor:
    """Shading (..., N) of lightings ``coefficients`` (..., 9) at basis values ``basis`` (N, 9)."""
    return tf.einsum("...k,nk->...n", coefficients, basis)


def sh_basis(normals: tf.Tensor) -> tf.Tensor:
    """The 9 real orthonormal SH basis functions of order <= 2 at unit ``normals``.

    Args:
        normals: ``(..., 3)`` float. Unit vectors ``(x, y, z)``.

    Returns:
        basis: ``(..., 9)``. Values in the order of the module docstring's table.
    """
    normals = tf.convert_to_tensor(normals)
    if normals.shape.rank is not None and normals.shape[-1] not in (None, 3):
        raise InputError(f"sh_basis expects normals of shape (..., 3), got {normals.shape}")
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    x, y, z = tf.unstack(normals, axis=-1)
    return tf.stack(
        [
            tf.fill(tf.shape(x), tf.constant(c0, normals.dtype)),
            c1 * y,
            c1 * z,
            c1 * x,
            c2 * x * y,
            c2 * y * z,
            c3 * (3.0 * z * z - 1.0),
            c2 * x * z,
            c4 * (x * x - y * y),
        ],
        axis=-1,
    )


def sample_sphere(num_points: int, seed: int | tf.Tensor = 0, dtype: tf.DType = tf.float64) -> tf.Tensor:
    """Points drawn uniformly on the unit sphere (normalised Gaussian vectors).

    Returns:
        points: ``(num_points, 3)`` of ``dtype``.
    """
    v = tf.random.stateless_normal([num_points, 3], seed=_seed_pair(seed), dtype=tf.float64)
    return tf.cast(v / tf.norm(v, axis=-1, keepdims=True), dtype)


def random_sh_lighting(
    shape: tuple[int, ...] = (),
    seed: int | tf.Tensor = 0,
    sigma: float = 0.2,
    ambient: float = 0.9,
    dtype: tf.DType = tf.float32,
) -> tf.Tensor:
    """Random SH lighting of supplement D: ``N(0, sigma^2)`` coefficients plus ambient light.

    All 9 coefficients are drawn from ``N(0, sigma^2)``; the constant lighting of intensity
    ``ambient`` is added as ``ambient / c0`` to coefficient 0, so that a lighting with only
    that term shades every normal by exactly ``ambient``. (Adding ``ambient`` to the
    coefficient itself would give a shading of ``0.9 c0 = 0.25`` that the random terms often
    drive negative, and errors far outside Fig. 11's range.) Use the same coefficients for the
    three colour channels to reproduce the paper.

    Returns:
        coefficients: ``(*shape, 9)`` of ``dtype``.
    """
    coefficients = sigma * tf.random.stateless_normal([*shape, 9], seed=_seed_pair(seed), dtype=tf.float64)
    constant = tf.one_hot(0, 9, on_value=ambient / SH_CONSTANTS[0], dtype=tf.float64)
    return tf.cast(coefficients + constant, dtype)


def fit_sh(directions: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """Least-squares SH coefficients ``l`` minimising ``sum_j (sh_basis(n_j) @ l - v_j)^2``.

    Args:
        directions: ``(N, 3)`` float. Unit sample directions, well spread (N >= 9), e.g.
            :func:`sample_sphere`.
        values: ``(..., N)`` float. Function values at the directions, any number of leading batch
            dimensions.

    Returns:
        coefficients: ``(..., 9)``. Solved through the 9 x 9 normal equations (Cholesky); exact when
            ``values`` lie in the span of the basis.
    """
    directions = tf.convert_to_tensor(directions)
    values = tf.convert_to_tensor(values, dtype=directions.dtype)
    basis = sh_basis(directions)  # (N, 9)
    normal_matrix = tf.linalg.matmul(basis, basis, transpose_a=True)
    batch_shape = tf.shape(values)[:-1]
    flat = tf.reshape(values, [-1, tf.shape(values)[-1]])  # (M, N)
    rhs = tf.linalg.matmul(basis, flat, transpose_a=True, transpose_b=True)  # (9, M)
    solution = tf.linalg.cholesky_solve(tf.linalg.cholesky(normal_matrix), rhs)
    return tf.reshape(tf.transpose(solution), tf.concat([batch_shape, [9]], axis=0))


def fit_inverse_sh(
    sh_coeffs: tf.Tensor,
    num_points: int = 100_000,
    seed: int | tf.Tensor = 0,
    min_shading: float = 1e-3,
) -> tf.Tensor:
    """Inverse-SH coefficients approximating the inverse of an SH lighting (supplement D).

    Minimises ``sum_j (sh_basis(n_j) @ l_inv - 1 / (sh_basis(n_j) @ l))^2`` over ``num_points``
    uniform random directions ``n_j`` on the whole sphere (:func:`sample_sphere` with
    ``seed``), computed in float64 and returned in the input's dtype.

    Args:
        sh_coeffs: ``(..., 9)`` float. Conventional SH lighting ``l``
            (one vector per colour channel or per lighting).
        num_points: Number of sphere samples (100,000 in the paper).
        seed: int or (2,) int tensor. Seed of the sample directions.
        min_shading: In graph mode, shading below this value is clamped to it (see Raises).

    Returns:
        inverse_coeffs: ``(..., 9)``.

    Raises:
        InputError: In eager mode, when a lighting shades some sample direction by ``<= 0``
            (its inverse is undefined there) or is not finite. In graph mode the shading is clamped
            to ``min_shading`` instead, which keeps the result finite but not meaningful.
    """
    sh_coeffs = tf.convert_to_tensor(sh_coeffs)
    directions = sample_sphere(num_points, seed, tf.float64)
    shading = _shade(tf.cast(sh_coeffs, tf.float64), sh_basis(directions))
    if tf.executing_eagerly() and not bool(tf.reduce_all(shading > 0)):
        raise InputError(
            "fit_inverse_sh needs a lighting that is positive and finite on the whole sphere; "
            f"got a minimum shading of {float(tf.reduce_min(shading)):.4g}"
        )
    finite = tf.where(tf.math.is_finite(shading), shading, tf.ones_like(shading))
    inverse = 1.0 / tf.maximum(finite, min_shading)
    return tf.cast(fit_sh(directions, inverse), sh_coeffs.dtype)


def inverse_lighting_errors(
    sh_coeffs: tf.Tensor, inverse_coeffs: tf.Tensor, directions: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Max and RMS error of lighting intensity, conventional vs inverse SH (Fig. 11).

    The error at a direction ``n`` is ``|s(n) - 1 / g(n)|`` with the conventional shading
    ``s = sh_basis(n) @ sh_coeffs`` and the inverse shading ``g = sh_basis(n) @
    inverse_coeffs``: both are intensities, the brightness a white surface gets under each
    model (the inverse model renders ``albedo / g``). Where ``g <= 0`` the inverse model cannot
    render and the error counts as infinite.

    Args:
        sh_coeffs, inverse_coeffs: ``(..., 9)`` float.
        directions: ``(N, 3)`` float. Unit directions to evaluate at.

    Returns:
        max_error, rms_error: ``(...)``.
    """
    sh_coeffs = tf.convert_to_tensor(sh_coeffs)
    basis = sh_basis(tf.cast(directions, sh_coeffs.dtype))
    shading = _shade(sh_coeffs, basis)
    inverse = _shade(tf.cast(inverse_coeffs, sh_coeffs.dtype), basis)
    error = tf.where(inverse > 0, tf.abs(shading - 1.0 / inverse), tf.constant(float("inf"), sh_coeffs.dtype))
    return tf.reduce_max(error, axis=-1), tf.sqrt(tf.reduce_mean(tf.square(error), axis=-1))
