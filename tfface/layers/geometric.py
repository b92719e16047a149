r"""Geometric least squares: inverse camera and shape+expression coefficients (supplement R).

For every sampled pixel ``j`` with pixel coordinates :math:`x_j = (x_j, y_j, 1)`, predicted depth
:math:`d_j`, confidence :math:`\omega_j` and the UV-3DMM sampled at its correspondence (mean
:math:`a_j`, basis :math:`B_j`), eqs. 33-37 solve

.. math::
    \min_{\hat P, \hat q, m} \sum_j \omega_j \|\hat P (d_j x_j) + \hat q - a_j - B_j m\|^2
        + \rho \|\hat q - (0, 0, z_0)\|^2 + \sum_i \alpha_i^2 m_i^2 ,

i.e. rows :math:`\Psi_j \theta - B_j m = a_j` with :math:`\Psi_j = I_3 \otimes u_j^T`,
:math:`u_j = (d_j x_j, d_j y_j, d_j, 1)` and :math:`\theta` the rows of :math:`[\hat P \; \hat q]`.

Numerics (float32). This is the structured problem of
:mod:`tfface.layers.structured_least_squares` with shared features :math:`u_j` (the Kronecker
zeros of :math:`\Psi_j` are never materialised; analytic gradient). Before forming it,
:math:`u_j` is replaced by :math:`u'_j = T u_j`: pixel coordinates centred on
their weighted mean and scaled by their spread, depth scaled by its maximum and centred (without
this, columns like :math:`d x \sim 10^5` next to ``1`` lose everything to float32 rounding). The
solution is invariant to the (constant, stop-gradient) ``T``: :math:`\theta_k = T^T \theta'_k`.
The system is then Jacobi-scaled, ridged and solved by Cholesky or by the TFLite-compatible
Gauss-Jordan solver, with one step of iterative refinement from the samples
(:mod:`tfface.layers.normal_equations`).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from tfface.geometry.camera import decompose_inverse_camera, inverse_camera_is_valid
from tfface.layers import structured_least_squares as structured
from tfface.layers.least_squares_checks import check_samples
from tfface.layers.solve_layer import LeastSquaresLayer
from tfface.layers.structured_least_squares import LinearProblem

#: Number of inverse-camera unknowns: the three rows of [P_hat | q_hat].
CAMERA_UNKNOWNS = 12


class GeometricSystem(NamedTuple):
    """Eq. 37 as a structured least-squares problem in normalised camera coordinates.

    Unknowns ``x = [theta'_0, theta'_1, theta'_2, m]`` with ``theta_k = T^T theta'_k`` the
    ``k``-th row of ``[P_hat | q_hat]``.

    Attributes:
        problem: LinearProblem. Features ``u'`` (B, P, 4), weights, basis ``-B_j`` rows, target
            ``a_j`` and the prior (translation and coefficient regularisers).
        transform: ``(B, 4, 4)``. ``T`` (constant for the gradient).
    """

    problem: LinearProblem
    transform: tf.Tensor


def camera_features(
    pixels: tf.Tensor, depth: tf.Tensor, weights: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalised camera features ``u' = T (d x, d y, d, 1)`` of the samples.

    Args:
        pixels: ``(B, P, 2)`` float32. Pixel coordinates (x right, y down, centres at +0.5).
        depth: ``(B, P)`` float32. Predicted depth ``d`` (any positive unit; its scale is ``psi``).
        weights: ``(B, P)`` float32. Sample weights; the statistics use the samples with positive
            weight (all samples if none has).

    Returns:
        features: ``(B, P, 4)``. ``((x - c_x) d / (s D), (y - c_y) d / (s D), d / D - m, 1)`` with
            ``c`` the weighted pixel centroid, ``s`` the weighted RMS pixel spread
            (at least 1e-3 px), ``D`` the largest ``|d|`` and ``m`` the weighted mean of ``d / D``;
            differentiable in pixels and depth.
        transform: ``(B, 4, 4)``. ``T`` with ``features = T u``; built from stop-gradient
            statistics.
    """
    dtype = pixels.dtype
    used = tf.stop_gradient(tf.cast(weights > 0, dtype))
    used = tf.where(tf.reduce_any(used > 0, axis=-1, keepdims=True), used, tf.ones_like(used))
    share = used / tf.reduce_sum(used, axis=-1, keepdims=True)
    still_pixels = tf.stop_gradient(pixels)
    still_depth = tf.stop_gradient(depth)

    depth_scale = tf.maximum(tf.reduce_max(tf.abs(still_depth) * used, axis=-1), 1e-30)
    scaled_depth = depth / depth_scale[:, None]
    depth_offset = tf.reduce_sum(share * tf.stop_gradient(scaled_depth), axis=-1)
    centre = tf.reduce_sum(share[..., None] * still_pixels, axis=-2)
    spread = tf.sqrt(
        tf.reduce_sum(share * tf.reduce_sum(tf.square(still_pixels - centre[:, None]), -1), -1) / 2
    )
    spread = tf.maximum(spread, 1e-3)

    planar = (pixels - centre[:, None]) / spread[:, None, None] * scaled_depth[..., None]
    features = tf.concat(
        [
            planar,
            (scaled_depth - depth_offset[:, None])[..., None],
            tf.ones_like(scaled_depth)[..., None],
        ],
        axis=-1,
    )
    inverse = 1.0 / (spread * depth_scale)
    zero, one = tf.zeros_like(inverse), tf.ones_like(inverse)
    transform = tf.stack(
        [
            tf.stack([inverse, zero, -centre[:, 0] * inverse, zero], -1),
            tf.stack([zero, inverse, -centre[:, 1] * inverse, zero], -1),
            tf.stack([zero, zero, 1.0 / depth_scale, -depth_offset], -1),
            tf.stack([zero, zero, zero, one], -1),
        ],
        axis=-2,
    )
    return features, tf.cast(transform, dtype)


def camera_features_inverse(transform: tf.Tensor) -> tf.Tensor:
    """Closed-form inverse ``(B, 4, 4)`` of :func:`camera_features`' ``transform`` ``T`` (elementwise
    ops only, TFLite built-ins).

    ``T`` has rows ``(a, 0, -c_x a, 0)``, ``(0, a, -c_y a, 0)``, ``(0, 0, 1/D, -m)``, ``(0, 0, 0, 1)``
    with ``a = 1 / (s D)``, so ``T^-1`` has rows ``(1/a, 0, c_x D, c_x D m)``,
    ``(0, 1/a, c_y D, c_y D m)``, ``(0, 0, D, D m)``, ``(0, 0, 0, 1)``.
    """
    a, depth_scale = transform[:, 0, 0], 1.0 / transform[:, 2, 2]
    centre = -transform[:, 0:2, 2] / a[:, None]
    offset = -transform[:, 2, 3]
    zero, one = tf.zeros_like(a), tf.ones_like(a)
    return tf.stack(
        [
            tf.stack([1.0 / a, zero, centre[:, 0] * depth_scale, centre[:, 0] * depth_scale * offset], -1),
            tf.stack([zero, 1.0 / a, centre[:, 1] * depth_scale, centre[:, 1] * depth_scale * offset], -1),
            tf.stack([zero, zero, depth_scale, depth_scale * offset], -1),
            tf.stack([zero, zero, zero, one], -1),
        ],
        axis=-2,
    )


def _kron_identity3(block: tf.Tensor) -> tf.Tensor:
    """``I_3 (x) block`` for ``(B, 4, 4)`` blocks, as ``(B, 12, 12)``."""
    eye = tf.eye(3, dtype=block.dtype)
    return tf.reshape(tf.einsum("ij,bkl->bikjl", eye, block), [-1, 12, 12])


def geometric_system(
    pixels: tf.Tensor,
    depth: tf.Tensor,
    weights: tf.Tensor,
    mean: tf.Tensor,
    basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
    translation_weight: tf.Tensor | float,
    z0: float,
) -> GeometricSystem:
    """Form the normal equations of eq. 37 (see the module docstring).

    Args:
        pixels: ``(B, P, 2)``.
        depth: ``(B, P)``.
        weights: ``(B, P)``. Confidence times validity, ``omega_j >= 0``.
        mean: ``(B, P, 3)``. Sampled 3DMM mean ``a_j`` (mm).
        basis: ``(B, P, 3, K)``. Sampled shape+expression basis ``B_j`` (mm per unit coefficient).
        coefficient_weights: ``(K,)`` or ``(B, K)``. ``alpha_i^2`` pulling ``m_i`` to 0.
        translation_weight: scalar. ``rho`` pulling ``q_hat`` to ``(0, 0, z0)``.
        z0: Distance (mm) of the prior camera centre in front of the face.

    Returns:
        GeometricSystem: Rows ``[I_3 (x) u'_j, -B_j] x = a_j``: the basis enters as given, the
            structured problem's sign convention supplies the minus.
    """
    dtype = pixels.dtype
    num_coefficients = basis.shape[-1]
    batch = tf.shape(pixels)[0]
    features, transform = camera_features(pixels, depth, weights)

    # Translation prior rho |q_hat - (0, 0, z0)|^2 with q_hat_k = e . theta'_k, e = T[:, 3].
    rho = tf.cast(translation_weight, dtype)
    e = transform[:, :, 3]
    translation_block = _kron_identity3(rho * e[:, :, None] * e[:, None, :])
    target = tf.constant([0.0, 0.0, z0], dtype)
    alpha2 = tf.broadcast_to(tf.cast(coefficient_weights, dtype), [batch, num_coefficients])
    prior_matrix = tf.concat(
        [
            tf.concat([translation_block, tf.zeros([batch, CAMERA_UNKNOWNS, num_coefficients], dtype)], -1),
            tf.concat([tf.zeros([batch, num_coefficients, CAMERA_UNKNOWNS], dtype), tf.linalg.diag(alpha2)], -1),
        ],
        axis=-2,
    )
    prior_rhs = tf.concat(
        [tf.reshape(rho * target[None, :, None] * e[:, None, :], [-1, 12]), tf.zeros_like(alpha2)],
        axis=-1,
    )
    return GeometricSystem(
        LinearProblem(features, weights, basis, mean, prior_matrix, prior_rhs), transform
    )


def inverse_camera(system: GeometricSystem, solution: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(P_hat (B, 3, 3), q_hat (B, 3))`` from a solution in normalised coordinates."""
    theta = tf.matmul(tf.reshape(solution[:, :CAMERA_UNKNOWNS], [-1, 3, 4]), system.transform)
    return theta[:, :, :3], theta[:, :, 3]


def solve_geometry(
    pixels: tf.Tensor,
    depth: tf.Tensor,
    weights: tf.Tensor,
    mean: tf.Tensor,
    basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
    translation_weight: tf.Tensor | float = 0.0,
    z0: float = 500.0,
    ridge: float = 1e-6,
    refinement_steps: int = 1,
    solver: str = "cholesky",
) -> dict[str, tf.Tensor]:
    """Solve eq. 37 for one image per batch entry (see :func:`geometric_system` for inputs).

    Returns:
        dict: ``p_hat`` (B, 3, 3), ``q_hat`` (B, 3) (mm), ``coefficients`` (B, K), ``residual``
            (B, P, 3) (mm) and ``well_posed`` (B,) float32: 1 where some sample had positive weight,
            the solution is finite and the inverse camera decomposes
            (:func:`~tfface.geometry.camera.inverse_camera_is_valid`), else 0 (no weight: the
            solution is the prior's; all samples on one pixel, planar depth without translation
            prior, ...: a singular ``P_hat``).
    """
    system = geometric_system(
        pixels, depth, weights, mean, basis, coefficient_weights, translation_weight, z0
    )
    solution, residual = structured.solve(system.problem, ridge, refinement_steps, solver)
    return geometric_outputs(system, solution, residual)


def geometric_outputs(
    system: GeometricSystem, solution: tf.Tensor, residual: tf.Tensor
) -> dict[str, tf.Tensor]:
    """The output dictionary of :func:`solve_geometry` for a solution of ``system`` and its
    residual ``P_hat d x + q_hat - (a + B m)`` (B, P, 3) mm."""
    p_hat, q_hat = inverse_camera(system, solution)
    finite = tf.reduce_all(tf.math.is_finite(solution), axis=-1)
    informed = tf.reduce_any(system.problem.weights > 0, axis=-1)
    decomposable = inverse_camera_is_valid(p_hat, q_hat)
    well_posed = tf.logical_and(tf.logical_and(finite, informed), decomposable)
    return {
        "p_hat": p_hat,
        "q_hat": q_hat,
        "coefficients": solution[:, CAMERA_UNKNOWNS:],
        "residual": residual,
        "well_posed": tf.cast(well_posed, p_hat.dtype),
    }


def check_geometric_inputs(
    pixels: tf.Tensor,
    depth: tf.Tensor,
    weights: tf.Tensor,
    mean: tf.Tensor,
    basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
) -> None:
    """Raise :class:`InputError` for inconsistent shapes or (eagerly) bad values."""
    check_samples(
        {
            "pixels": (pixels, (2,)),
            "depth": (depth, ()),
            "weights": (weights, ()),
            "mean": (mean, (3,)),
            "basis": (basis, (3, None)),
        },
        weights,
        coefficient_weights,
        basis_name="basis",
    )


@keras.saving.register_keras_serializable(package="tfface")
class GeometricLeastSquares(LeastSquaresLayer):
    """Keras layer solving eq. 37: inverse camera and shape+expression coefficients.

    Args:
        z0: Prior camera centre ``(0, 0, z0)`` in model space (mm) of the translation regulariser.
        translation_weight: Initial ``rho``; a non-trainable variable (``layer.translation_weight``)
            a training schedule assigns to (supplement F: on early, decaying). Units: same as the
            sample weights (a weight of 1 counts like one sample with unit confidence).
        ridge, refinement_steps, solver: See :class:`~tfface.layers.solve_layer.LeastSquaresLayer`.

    Call arguments:
        pixels, depth, weights, mean, basis, coefficient_weights: ``(B, P, 2)``, ``(B, P)``,
            ``(B, P)``, ``(B, P, 3)``, ``(B, P, 3, K)`` and ``(K,)`` or ``(B, K)``: see
            :func:`geometric_system`.
        translation_prior: apply the translation regulariser (training); False solves without it
            whatever ``translation_weight`` holds (inference: the regulariser pulls the camera
            centre to the frontal ``(0, 0, z0)`` and so the fitted view towards frontal).

    Returns:
        dict: ``p_hat`` (B, 3, 3), ``q_hat`` (B, 3), ``coefficients`` (B, K), ``residual``
            (B, P, 3) mm, ``well_posed`` (B,). In eager mode, non-finite inputs raise
            :class:`~tfface.errors.InputError` and a non-finite result
            :class:`~tfface.errors.SolveError`.
    """

    solve_name = "geometric"

    def __init__(self, z0: float = 500.0, translation_weight: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.z0 = float(z0)
        self.initial_translation_weight = float(translation_weight)
        self.translation_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_translation_weight),
            trainable=False,
            name="translation_weight",
        )

    def prior_options(self, translation_prior: bool) -> dict:
        """The translation regulariser's solver options: its weight (0 without the prior) and ``z0``."""
        weight = tf.convert_to_tensor(self.translation_weight) if translation_prior else tf.constant(0.0)
        return {"translation_weight": weight, "z0": self.z0}

    def call(self, pixels, depth, weights, mean, basis, coefficient_weights, translation_prior: bool = True):
        return self.solve_checked(
            check_geometric_inputs,
            solve_geometry,
            (pixels, depth, weights, mean, basis, coefficient_weights),
            **self.prior_options(translation_prior),
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(z0=self.z0, translation_weight=self.initial_translation_weight)
        return config


@keras.saving.register_keras_serializable(package="tfface")
class InverseCameraDecomposition(keras.layers.Layer):
    """Keras layer: ``(p_hat, q_hat) -> K, R, t, psi`` (supplement Q, corrected).

    Wraps :func:`tfface.geometry.camera.decompose_inverse_camera`; ``valid`` (B,) float32 marks
    decomposable inputs (finite, ``det P_hat > 0``); the others get a finite placeholder camera
    (``K = R = I``) that only ``valid`` tells apart.

    Args:
        strict: In eager mode, raise :class:`~tfface.errors.SolveError` on a degenerate input
            (default). False: never raise, so that one degenerate image of a batch fails alone
            (inference).

    Returns:
        dict: ``K`` (B, 3, 3), ``R`` (B, 3, 3), ``t`` (B, 3) mm, ``psi`` (B,), ``valid`` (B,).
    """

    def __init__(self, strict: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.strict = bool(strict)

    def call(self, p_hat, q_hat):
        K, R, t, psi = decompose_inverse_camera(p_hat, q_hat, strict=self.strict)
        valid = tf.cast(inverse_camera_is_valid(p_hat, q_hat), K.dtype)
        return {"K": K, "R": R, "t": t, "psi": psi, "valid": valid}

    def get_config(self) -> dict:
        return {**super().get_config(), "strict": self.strict}
