r"""Photometric least squares: inverse-SH lighting and albedo coefficients (supplement R).

With the inverse spherical-harmonic lighting model (supplement D, :mod:`tfface.geometry.sh`),
``albedo = pixel * inverse_shading`` and ``inverse_shading_c = F(n) . l_c`` per colour channel
``c``. For every sampled pixel ``j`` with colour :math:`i_j` (softplus-preprocessed image,
supplement E), weight :math:`\omega_j`, camera-space normal :math:`n_j` of the fitted shape and
the albedo model sampled at its correspondence (mean :math:`c_j`, basis :math:`D_j`), eqs. 38-41
solve

.. math::
    \min_{l, h} \sum_{j, c} \omega_j \left(i_{jc} F_j \cdot l_c - D_{jc} h - c_{jc}\right)^2
        + \xi \|l - l_0\|^2 + \sum_i \gamma_i^2 h_i^2

for the 27 inverse-lighting coefficients ``l`` (9 per RGB channel) and the albedo coefficients
``h``, with :math:`F_j = \mathrm{sh\_basis}(n_j)`.

Lighting prior. Eq. 40 pulls ``l`` to ``l_0 = 0``. An inverse shading of 0 maps every pixel to
black albedo, so that prior drags the fit towards dark albedo and fights the albedo prior (which
pulls to the mean colour ``c_j``) wherever the data are weak. The default here is
``lighting_prior="neutral"``: ``l_0`` is the unit inverse shading (``l_0c = (1 / c0, 0, ..., 0)``,
``F(n) . l_0c = 1`` for every normal), so weak data leave ``albedo = pixel colour``, the natural
estimate, and the regulariser is unbiased for an ambient, white light. ``"zero"`` reproduces
eq. 40 literally. With small ``xi`` (it only needs to keep the system definite) the two agree.

The channel-block structure is exploited: ``l_c`` only meets rows of channel ``c``, so the
lighting block is block-diagonal (one ``(27, P) x (P, 27)`` product, masked), the lighting-albedo
block comes from one ``(27, P) x (P, 3 Kr + 3)`` product (channel diagonal kept) and the albedo
block from one ``(Kr, 3P) x (3P, Kr)`` product.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry.normals import vertex_normals
from tfface.geometry.sh import SH_CONSTANTS, sh_basis
from tfface.layers.least_squares_checks import check_samples, raise_if_not_finite
from tfface.layers.linear_solve import SOLVERS
from tfface.layers.normal_equations import solve_refined

#: Inverse-lighting unknowns: 9 SH coefficients per RGB channel.
LIGHTING_UNKNOWNS = 27
#: Accepted values of ``lighting_prior``.
LIGHTING_PRIORS = ("neutral", "zero")
#: Inverse shading below this value is clamped when reconstructing colour (albedo / shading).
MIN_INVERSE_SHADING = 1e-3


def sample_normals(
    vertices: tf.Tensor,
    triangles: tf.Tensor,
    vertex_ids: tf.Tensor,
    barycentrics: tf.Tensor,
    rotation: tf.Tensor,
) -> tf.Tensor:
    """Camera-space unit normals of the fitted shape at the samples.

    Parameters
    ----------
    vertices : (B, V, 3) float
        Fitted model vertices (mm), e.g. ``mean + basis . m`` of the geometric solve.
    triangles : (T, 3) int
        The model's triangles (counter-clockwise from the front).
    vertex_ids : (B, P, 3) int
        Corner vertices of the triangle under each sample (``UVSample.vertex_ids``).
    barycentrics : (B, P, 3) float
        Barycentric weights of each sample (``UVSample.barycentrics``).
    rotation : (B, 3, 3) float
        Camera rotation ``R`` (model to camera space) of the geometric solve.

    Returns
    -------
    normals : (B, P, 3)
        Unit normals ``R n`` (barycentric blend of area-weighted vertex normals, renormalised;
        ``R (0, 0, 1)`` where the blend vanishes). Differentiable in vertices, barycentrics and
        rotation.
    """
    per_vertex = vertex_normals(vertices, triangles)
    corners = tf.gather(per_vertex, vertex_ids, batch_dims=1)  # (B, P, 3, 3)
    blended = tf.reduce_sum(barycentrics[..., None] * corners, axis=-2)
    squared = tf.reduce_sum(tf.square(blended), axis=-1, keepdims=True)
    usable = squared > np.finfo(blended.dtype.as_numpy_dtype).tiny
    unit = blended * tf.math.rsqrt(tf.where(usable, squared, tf.ones_like(squared)))
    unit = tf.where(usable, unit, tf.constant([0.0, 0.0, 1.0], blended.dtype))
    return tf.matmul(unit, rotation, transpose_b=True)


def neutral_lighting(dtype: tf.DType = tf.float32) -> tf.Tensor:
    """``(3, 9)`` inverse-SH coefficients of unit inverse shading in every channel."""
    return tf.constant([[1.0 / SH_CONSTANTS[0]] + [0.0] * 8] * 3, dtype)


class PhotometricSystem(NamedTuple):
    """Normal equations of eq. 41. Unknowns ``x = [l_0 (9), l_1 (9), l_2 (9), h (Kr)]``.

    Attributes: ``matrix`` (B, 27 + Kr, 27 + Kr) and ``rhs`` (B, 27 + Kr) (data and prior),
    ``prior_matrix``, ``prior_rhs`` (the prior's parts), ``sh`` (B, P, 9) the SH basis at the
    normals, ``image`` (B, P, 3), ``weights`` (B, P), ``albedo_mean`` (B, P, 3),
    ``albedo_basis`` (B, P, 3, Kr).
    """

    matrix: tf.Tensor
    rhs: tf.Tensor
    prior_matrix: tf.Tensor
    prior_rhs: tf.Tensor
    sh: tf.Tensor
    image: tf.Tensor
    weights: tf.Tensor
    albedo_mean: tf.Tensor
    albedo_basis: tf.Tensor


def _channel_diagonal(blocks: tf.Tensor) -> tf.Tensor:
    """``(B, 3, 9, 3, n) -> (B, 27, n)``: keep the blocks whose two channel indices agree."""
    diagonal = tf.linalg.diag_part(tf.transpose(blocks, [0, 2, 4, 1, 3]))  # (B, 9, n, 3)
    return tf.reshape(tf.transpose(diagonal, [0, 3, 1, 2]), [-1, LIGHTING_UNKNOWNS, blocks.shape[-1]])


def photometric_system(
    image: tf.Tensor,
    normals: tf.Tensor,
    weights: tf.Tensor,
    albedo_mean: tf.Tensor,
    albedo_basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
    lighting_weight: float,
    lighting_target: tf.Tensor,
) -> PhotometricSystem:
    """Form the normal equations of eq. 41 (see the module docstring).

    Parameters
    ----------
    image : (B, P, 3)
        Pixel colours ``i_j`` at the samples (softplus-preprocessed, supplement E).
    normals : (B, P, 3)
        Camera-space unit normals of the fitted shape (:func:`sample_normals`).
    weights : (B, P)
        ``omega_j >= 0``.
    albedo_mean : (B, P, 3)
        Sampled albedo mean ``c_j``.
    albedo_basis : (B, P, 3, Kr)
        Sampled albedo basis ``D_j``.
    coefficient_weights : (Kr,) or (B, Kr)
        ``gamma_i^2``.
    lighting_weight : float
        ``xi``.
    lighting_target : (3, 9)
        ``l_0``.
    """
    dtype = image.dtype
    num_albedo = albedo_basis.shape[-1]
    batch = tf.shape(image)[0]
    sh = sh_basis(normals)  # (B, P, 9)
    lighting_rows = tf.reshape(image[..., :, None] * sh[..., None, :], [batch, -1, 27])  # (B,P,27)
    weighted_rows = weights[..., None] * lighting_rows

    lighting_block = tf.matmul(weighted_rows, lighting_rows, transpose_a=True)
    lighting_block *= tf.constant(np.kron(np.eye(3), np.ones((9, 9))), dtype)
    albedo_columns = tf.concat(
        [tf.reshape(albedo_basis, [batch, -1, 3 * num_albedo]), albedo_mean], axis=-1
    )  # (B, P, 3 Kr + 3): basis per channel, then mean per channel
    cross = tf.matmul(weighted_rows, albedo_columns, transpose_a=True)  # (B, 27, 3 Kr + 3)
    cross_basis = _channel_diagonal(tf.reshape(cross[..., : 3 * num_albedo], [-1, 3, 9, 3, num_albedo]))
    lighting_rhs = _channel_diagonal(tf.reshape(cross[..., 3 * num_albedo :], [-1, 3, 9, 3, 1]))[..., 0]

    flat_basis = tf.reshape(albedo_basis, [batch, -1, num_albedo])  # (B, 3P, Kr)
    weighted_basis = flat_basis * tf.repeat(weights, 3, axis=-1)[..., None]
    albedo_block = tf.matmul(weighted_basis, flat_basis, transpose_a=True)
    albedo_rhs = -tf.linalg.matvec(weighted_basis, tf.reshape(albedo_mean, [batch, -1]), transpose_a=True)

    data_matrix = tf.concat(
        [
            tf.concat([lighting_block, -cross_basis], axis=-1),
            tf.concat([-tf.transpose(cross_basis, [0, 2, 1]), albedo_block], axis=-1),
        ],
        axis=-2,
    )
    data_rhs = tf.concat([lighting_rhs, albedo_rhs], axis=-1)

    xi = tf.cast(lighting_weight, dtype)
    gamma2 = tf.broadcast_to(tf.cast(coefficient_weights, dtype), tf.shape(albedo_rhs))
    prior_diagonal = tf.concat([xi * tf.ones_like(lighting_rhs), gamma2], axis=-1)
    prior_matrix = tf.linalg.diag(prior_diagonal)
    target = tf.reshape(tf.cast(lighting_target, dtype), [1, LIGHTING_UNKNOWNS])
    prior_rhs = tf.concat([xi * target * tf.ones_like(lighting_rhs), tf.zeros_like(gamma2)], axis=-1)
    return PhotometricSystem(
        data_matrix + prior_matrix,
        data_rhs + prior_rhs,
        prior_matrix,
        prior_rhs,
        sh,
        image,
        weights,
        albedo_mean,
        albedo_basis,
    )


def _split(solution: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.reshape(solution[:, :LIGHTING_UNKNOWNS], [-1, 3, 9]), solution[:, LIGHTING_UNKNOWNS:]


def inverse_shading(system: PhotometricSystem, solution: tf.Tensor) -> tf.Tensor:
    """``F_j . l_c`` per sample and channel, ``(B, P, 3)``."""
    lighting, _ = _split(solution)
    return tf.matmul(system.sh, lighting, transpose_b=True)


def fitted_albedo(system: PhotometricSystem, solution: tf.Tensor) -> tf.Tensor:
    """``c_j + D_j h`` per sample, ``(B, P, 3)``."""
    _, coefficients = _split(solution)
    return system.albedo_mean + tf.einsum("bpck,bk->bpc", system.albedo_basis, coefficients)


def photometric_residual(system: PhotometricSystem, solution: tf.Tensor) -> tf.Tensor:
    """``i_j * (F_j . l) - (c_j + D_j h)`` (albedo units), ``(B, P, 3)``."""
    return system.image * inverse_shading(system, solution) - fitted_albedo(system, solution)


def photometric_gradient(system: PhotometricSystem, solution: tf.Tensor) -> tf.Tensor:
    """``A^T W (b - A x) + prior_rhs - prior_matrix x`` from the samples, ``(B, 27 + Kr)``."""
    residual = system.weights[..., None] * photometric_residual(system, solution)
    lighting = tf.matmul(system.image * residual, system.sh, transpose_a=True)  # (B, 3, 9)
    albedo = tf.einsum("bpck,bpc->bk", system.albedo_basis, residual)
    prior = system.prior_rhs - tf.linalg.matvec(system.prior_matrix, solution)
    return tf.concat([-tf.reshape(lighting, [-1, LIGHTING_UNKNOWNS]), albedo], axis=-1) + prior


def solve_photometry(
    image: tf.Tensor,
    normals: tf.Tensor,
    weights: tf.Tensor,
    albedo_mean: tf.Tensor,
    albedo_basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
    lighting_weight: float = 1e-3,
    lighting_prior: str = "neutral",
    ridge: float = 1e-6,
    refinement_steps: int = 1,
    solver: str = "cholesky",
) -> dict[str, tf.Tensor]:
    """Solve eq. 41 (see :func:`photometric_system` for the inputs).

    Returns
    -------
    dict with
        ``lighting`` (B, 3, 9) inverse-SH coefficients, ``coefficients`` (B, Kr) albedo
        coefficients, ``albedo`` (B, P, 3) fitted albedo ``c + D h``, ``inverse_shading``
        (B, P, 3), ``colour`` (B, P, 3) reconstructed pixel colour ``albedo / inverse_shading``
        (shading clamped below at ``MIN_INVERSE_SHADING``), ``residual`` (B, P, 3) the solve's
        residual ``i * inverse_shading - albedo`` (albedo units; the colour-space error is
        ``image - colour``), ``well_posed`` (B,).
    """
    if lighting_prior not in LIGHTING_PRIORS:
        raise InputError(f"lighting_prior must be one of {LIGHTING_PRIORS}, got {lighting_prior!r}")
    target = neutral_lighting(image.dtype) if lighting_prior == "neutral" else tf.zeros([3, 9], image.dtype)
    system = photometric_system(
        image, normals, weights, albedo_mean, albedo_basis, coefficient_weights, lighting_weight, target
    )
    solution = solve_refined(
        system.matrix,
        system.rhs,
        lambda x: photometric_gradient(system, x),
        refinement_steps=refinement_steps,
        ridge=ridge,
        method=solver,
    )
    lighting, coefficients = _split(solution)
    shading = inverse_shading(system, solution)
    albedo = fitted_albedo(system, solution)
    finite = tf.reduce_all(tf.math.is_finite(solution), axis=-1)
    informed = tf.reduce_any(weights > 0, axis=-1)
    return {
        "lighting": lighting,
        "coefficients": coefficients,
        "albedo": albedo,
        "inverse_shading": shading,
        "colour": albedo / tf.maximum(shading, MIN_INVERSE_SHADING),
        "residual": system.image * shading - albedo,
        "well_posed": tf.cast(tf.logical_and(finite, informed), image.dtype),
    }


def check_photometric_inputs(
    image: tf.Tensor,
    normals: tf.Tensor,
    weights: tf.Tensor,
    albedo_mean: tf.Tensor,
    albedo_basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
) -> None:
    """Raise :class:`InputError` for inconsistent shapes or (eagerly) bad values."""
    check_samples(
        {
            "image": (image, (3,)),
            "normals": (normals, (3,)),
            "weights": (weights, ()),
            "albedo_mean": (albedo_mean, (3,)),
            "albedo_basis": (albedo_basis, (3, None)),
        },
        weights,
        coefficient_weights,
        basis_name="albedo_basis",
    )


@keras.saving.register_keras_serializable(package="tfface")
class PhotometricLeastSquares(keras.layers.Layer):
    """Keras layer solving eq. 41: inverse-SH lighting and albedo coefficients.

    Parameters
    ----------
    lighting_weight : float
        ``xi`` of the lighting prior (units of the sample weights).
    lighting_prior : {"neutral", "zero"}
        ``l_0``: unit inverse shading (default, see the module docstring) or 0 (eq. 40).
    ridge, refinement_steps, solver
        As for :class:`~tfface.layers.geometric.GeometricLeastSquares`.

    Call arguments
    --------------
    image (B, P, 3), normals (B, P, 3), weights (B, P), albedo_mean (B, P, 3),
    albedo_basis (B, P, 3, Kr), coefficient_weights (Kr,) or (B, Kr).

    Returns
    -------
    dict: see :func:`solve_photometry`. In eager mode, non-finite inputs raise
    :class:`~tfface.errors.InputError` and a non-finite result :class:`~tfface.errors.SolveError`.
    """

    def __init__(
        self,
        lighting_weight: float = 1e-3,
        lighting_prior: str = "neutral",
        ridge: float = 1e-6,
        refinement_steps: int = 1,
        solver: str = "cholesky",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if solver not in SOLVERS:
            raise InputError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
        if lighting_prior not in LIGHTING_PRIORS:
            raise InputError(f"lighting_prior must be one of {LIGHTING_PRIORS}, got {lighting_prior!r}")
        self.lighting_weight = float(lighting_weight)
        self.lighting_prior = lighting_prior
        self.ridge = float(ridge)
        self.refinement_steps = int(refinement_steps)
        self.solver = solver

    def call(self, image, normals, weights, albedo_mean, albedo_basis, coefficient_weights):
        tensors = [
            tf.convert_to_tensor(t, self.compute_dtype)
            for t in (image, normals, weights, albedo_mean, albedo_basis, coefficient_weights)
        ]
        check_photometric_inputs(*tensors)
        outputs = solve_photometry(
            *tensors,
            lighting_weight=self.lighting_weight,
            lighting_prior=self.lighting_prior,
            ridge=self.ridge,
            refinement_steps=self.refinement_steps,
            solver=self.solver,
        )
        raise_if_not_finite(outputs, "photometric")
        return outputs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            lighting_weight=self.lighting_weight,
            lighting_prior=self.lighting_prior,
            ridge=self.ridge,
            refinement_steps=self.refinement_steps,
            solver=self.solver,
        )
        return config
