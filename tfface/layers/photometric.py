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

This is the structured problem of :mod:`tfface.layers.structured_least_squares` with
per-channel features ``i_jc F_j`` (``l_c`` only meets rows of channel ``c``), model basis
``D_jc`` and target ``c_jc``; it has an analytic gradient.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry.normals import vertex_normals
from tfface.geometry.sh import SH_CONSTANTS, sh_basis
from tfface.layers import structured_least_squares as structured
from tfface.layers.least_squares_checks import check_samples
from tfface.layers.solve_layer import LeastSquaresLayer
from tfface.layers.structured_least_squares import LinearProblem

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

    Args:
        vertices: ``(B, V, 3)`` float. Fitted model vertices (mm), e.g. ``mean + basis . m`` of the
            geometric solve.
        triangles: ``(T, 3)`` int. The model's triangles (counter-clockwise from the front).
        vertex_ids: ``(B, P, 3)`` int. Corner vertices of the triangle under each sample
            (``UVSample.vertex_ids``).
        barycentrics: ``(B, P, 3)`` float. Barycentric weights of each sample
            (``UVSample.barycentrics``).
        rotation: ``(B, 3, 3)`` float. Camera rotation ``R`` (model to camera space) of the
            geometric solve.

    Returns:
        normals: ``(B, P, 3)``. Unit normals ``R n`` (barycentric blend of area-weighted vertex
            normals, renormalised; ``R (0, 0, 1)`` where the blend vanishes). Differentiable in
            vertices, barycentrics and rotation.
    """
    per_vertex = vertex_normals(vertices, triangles)
    corners = tf.gather(per_vertex, vertex_ids, batch_dims=1)  # (B, P, 3, 3)
    blended = tf.reduce_sum(barycentrics[..., None] * corners, axis=-2)
    squared = tf.reduce_sum(tf.square(blended), axis=-1, keepdims=True)
    usable = squared > np.finfo(blended.dtype.as_numpy_dtype).tiny
    unit = blended * tf.math.rsqrt(tf.where(usable, squared, tf.ones_like(squared)))
    unit = tf.where(usable, unit, tf.constant([0.0, 0.0, 1.0], blended.dtype))
    return tf.matmul(unit, rotation, transpose_b=True)


#: :func:`sample_normals` compiled with XLA: the gathers and the per-vertex scatter-sum of the
#: vertex normals fuse, forward and backward about 6 times faster on CPU than the op-by-op graph.
sample_normals_compiled = tf.function(sample_normals, jit_compile=True)


def neutral_lighting(dtype: tf.DType = tf.float32) -> tf.Tensor:
    """``(3, 9)`` inverse-SH coefficients of unit inverse shading in every channel."""
    return tf.constant([[1.0 / SH_CONSTANTS[0]] + [0.0] * 8] * 3, dtype)


def inverse_shading(normals: tf.Tensor, lighting: tf.Tensor) -> tf.Tensor:
    """Inverse shading ``F(n) . l_c`` of every sample and colour channel.

    Args:
        normals: ``(B, P, 3)``. Unit normals the lighting was fitted against.
        lighting: ``(B, 3, 9)``. Inverse-SH coefficients, one row per RGB channel.

    Returns:
        shading: ``(B, P, 3)``. ``albedo = pixel * shading``.
    """
    return tf.matmul(sh_basis(normals), lighting, transpose_b=True)


def photometric_system(
    image: tf.Tensor,
    normals: tf.Tensor,
    weights: tf.Tensor,
    albedo_mean: tf.Tensor,
    albedo_basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
    lighting_weight: float,
    lighting_target: tf.Tensor,
) -> LinearProblem:
    """Eq. 41 as a structured least-squares problem (see the module docstring).

    Args:
        image: ``(B, P, 3)``. Pixel colours ``i_j`` at the samples
            (softplus-preprocessed, supplement E).
        normals: ``(B, P, 3)``. Camera-space unit normals of the fitted shape
            (:func:`sample_normals`).
        weights: ``(B, P)``. ``omega_j >= 0``.
        albedo_mean: ``(B, P, 3)``. Sampled albedo mean ``c_j``.
        albedo_basis: ``(B, P, 3, Kr)``. Sampled albedo basis ``D_j``.
        coefficient_weights: ``(Kr,)`` or ``(B, Kr)``. ``gamma_i^2``.
        lighting_weight: ``xi``.
        lighting_target: ``(3, 9)``. ``l_0``.

    Returns:
        LinearProblem: Features ``i_jc F_j`` (B, P, 3, 9), unknowns ``[l_0, l_1, l_2, h]``.
    """
    dtype = image.dtype
    sh = sh_basis(normals)  # (B, P, 9)
    xi = tf.cast(lighting_weight, dtype)
    gamma2 = tf.broadcast_to(
        tf.cast(coefficient_weights, dtype), [tf.shape(image)[0], albedo_basis.shape[-1]]
    )
    lighting_ones = tf.ones_like(gamma2[:, :1]) * tf.ones([LIGHTING_UNKNOWNS], dtype)
    prior_matrix = tf.linalg.diag(tf.concat([xi * lighting_ones, gamma2], axis=-1))
    target = tf.reshape(tf.cast(lighting_target, dtype), [1, LIGHTING_UNKNOWNS])
    prior_rhs = tf.concat([xi * target * lighting_ones, tf.zeros_like(gamma2)], axis=-1)
    features = image[..., :, None] * sh[..., None, :]  # (B, P, 3, 9)
    return LinearProblem(features, weights, albedo_basis, albedo_mean, prior_matrix, prior_rhs)


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

    Returns:
        dict: ``lighting`` (B, 3, 9) inverse-SH coefficients, ``coefficients`` (B, Kr) albedo
            coefficients, ``albedo`` (B, P, 3) fitted albedo ``c + D h``, ``inverse_shading``
            (B, P, 3), ``colour`` (B, P, 3) reconstructed pixel colour ``albedo / inverse_shading``
            (shading clamped below at ``MIN_INVERSE_SHADING``), ``residual`` (B, P, 3) the solve's
            residual ``i * inverse_shading - albedo``
            (albedo units; the colour-space error is ``image - colour``), ``well_posed`` (B,).
    """
    if lighting_prior not in LIGHTING_PRIORS:
        raise InputError(f"lighting_prior must be one of {LIGHTING_PRIORS}, got {lighting_prior!r}")
    target = neutral_lighting(image.dtype) if lighting_prior == "neutral" else tf.zeros([3, 9], image.dtype)
    system = photometric_system(
        image, normals, weights, albedo_mean, albedo_basis, coefficient_weights, lighting_weight, target
    )
    solution, residual = structured.solve(system, ridge, refinement_steps, solver)
    lighting = tf.reshape(solution[:, :LIGHTING_UNKNOWNS], [-1, 3, 9])
    coefficients = solution[:, LIGHTING_UNKNOWNS:]
    shading = inverse_shading(normals, lighting)
    albedo = image * shading - residual
    finite = tf.reduce_all(tf.math.is_finite(solution), axis=-1)
    informed = tf.reduce_any(weights > 0, axis=-1)
    return {
        "lighting": lighting,
        "coefficients": coefficients,
        "albedo": albedo,
        "inverse_shading": shading,
        "colour": albedo / tf.maximum(shading, MIN_INVERSE_SHADING),
        "residual": residual,
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
class PhotometricLeastSquares(LeastSquaresLayer):
    """Keras layer solving eq. 41: inverse-SH lighting and albedo coefficients.

    Args:
        lighting_weight: ``xi`` of the lighting prior (units of the sample weights).
        lighting_prior: ``"neutral"`` or ``"zero"``, the prior mean ``l_0``: unit inverse shading
            (default, see the module docstring) or 0 (eq. 40).
        ridge, refinement_steps, solver: See :class:`~tfface.layers.solve_layer.LeastSquaresLayer`.

    Call arguments:
        image, normals, weights, albedo_mean, albedo_basis, coefficient_weights: ``(B, P, 3)``,
            ``(B, P, 3)``, ``(B, P)``, ``(B, P, 3)``, ``(B, P, 3, Kr)`` and ``(Kr,)`` or
            ``(B, Kr)``: see :func:`solve_photometry`.

    Returns:
        dict: see :func:`solve_photometry`. In eager mode, non-finite inputs raise
            :class:`~tfface.errors.InputError` and a non-finite result
            :class:`~tfface.errors.SolveError`.
    """

    solve_name = "photometric"

    def __init__(self, lighting_weight: float = 1e-3, lighting_prior: str = "neutral", **kwargs) -> None:
        super().__init__(**kwargs)
        if lighting_prior not in LIGHTING_PRIORS:
            raise InputError(f"lighting_prior must be one of {LIGHTING_PRIORS}, got {lighting_prior!r}")
        self.lighting_weight = float(lighting_weight)
        self.lighting_prior = lighting_prior

    def call(self, image, normals, weights, albedo_mean, albedo_basis, coefficient_weights):
        return self.solve_checked(
            check_photometric_inputs,
            solve_photometry,
            (image, normals, weights, albedo_mean, albedo_basis, coefficient_weights),
            lighting_weight=self.lighting_weight,
            lighting_prior=self.lighting_prior,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(lighting_weight=self.lighting_weight, lighting_prior=self.lighting_prior)
        return config
