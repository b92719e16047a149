r"""Inference variants of the geometric solve: known intrinsics, identity shared by several images.

Both restrict the unknowns of eq. 37 to a linear subspace ``x = G z`` of the single-image
unknowns and solve the reduced normal equations ``G^T N G z = G^T r`` (with iterative
refinement from the samples), so they reuse :func:`~tfface.layers.geometric.geometric_system`
and pass over the samples no more often than the single-image solve per stage.

Known intrinsics ``K``. In normalised coordinates :math:`x_n = K^{-1} x` the inverse camera is
:math:`\hat P_n = R^T / \psi`, a scaled rotation. Stage 1 solves the general problem in those
coordinates; the initial rotation is the orthogonal polar factor (Newton iteration with
determinant scaling, differentiable, no SVD) of :math:`\hat P_n`'s first two columns, completed
by their cross product. Those columns multiply :math:`x_n d` and :math:`y_n d` and are fixed by
the samples' spread across the image; the third multiplies the depth :math:`d` alone and is
confounded with :math:`\hat q` when the depth varies little (a flat depth map leaves it
undetermined, of any size and sign). Stage 2 runs a few Gauss-Newton
steps on the constrained problem, each a linear solve for
:math:`[s = 1/\psi, \omega, \hat q, m]` with :math:`\hat P_n = s (I - [\omega]_\times) R^T`
linearised (so the rotation is re-estimated under the constraint, not only projected), and
stage 3 fixes the converged rotation and solves for :math:`[s, \hat q, m]`, i.e. ``G`` maps
``(s, q_hat, m)`` to ``P_hat_n = s R^T``. All stages reuse one normal matrix: only the
refinement steps read the samples again.

Shared identity. For ``V`` images of one person the unknowns are per-image cameras and
expression coefficients and one identity vector: the block ("arrow") system of all images
is assembled from the per-image normal equations by selection matrices, and the identity prior
is counted once.

Gradients of both variants come from automatic differentiation through the normal equations
(correct but slower than the analytic gradient of the single-image solve; they are meant for
inference).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfface.geometry.camera import adjugate, upper_triangular_inverse
from tfface.geometry.vectors import det3
from tfface.layers import structured_least_squares as structured
from tfface.layers.geometric import (
    CAMERA_UNKNOWNS,
    GeometricSystem,
    camera_features_inverse,
    geometric_outputs,
    geometric_system,
    inverse_camera,
)
from tfface.layers.graph_loops import iterate
from tfface.layers.normal_equations import solve_refined


def polar_rotation(matrix: tf.Tensor, iterations: int = 12) -> tf.Tensor:
    """Orthogonal polar factor of ``(..., 3, 3)`` matrices with positive determinant, or of rank 2.

    Newton iteration ``X <- (g X + X^-T / g) / 2`` with ``g = |det X|^(-1/3)``, which converges
    quadratically for any nonsingular start; for ``det > 0`` the result is a proper rotation.
    It starts from ``M + k cof(M)`` (``cof(M) = adj(M)^T``; ``k = sqrt(3) / |M|``, Frobenius norm,
    the inverse scale of a scaled rotation). With ``M = U S V^T`` (``det(U V^T) = 1``),
    ``cof(M) = U cof(S) V^T``, so where ``det M > 0`` the start has ``M``'s polar factor
    ``U V^T``, and where ``M`` has rank 2 (a scaled rotation with one column undetermined, zero)
    the start completes that column with the cross product of the other two: it is nonsingular
    with a positive determinant. Non-finite inputs and those of rank 1 give the identity (finite,
    zero gradient).
    """
    dtype = matrix.dtype
    cofactor = tf.linalg.matrix_transpose(adjugate(matrix))
    tiny = np.finfo(dtype.as_numpy_dtype).tiny
    k = np.sqrt(3.0) * tf.math.rsqrt(tf.reduce_sum(tf.square(matrix), axis=[-2, -1]) + tiny)
    completed = matrix + k[..., None, None] * cofactor
    det = det3(completed)
    # |det| > 1e-6 times the product of the column norms (squared: no root, finite gradients)
    bound = tf.reduce_prod(tf.reduce_sum(tf.square(completed), axis=-2), axis=-1)
    usable = tf.logical_and(tf.math.is_finite(det), tf.square(det) > 1e-12 * bound)
    eye = tf.eye(3, dtype=dtype)

    def newton_step(current: tf.Tensor) -> tf.Tensor:
        det = det3(current)[..., None, None]
        gamma = tf.pow(tf.abs(det), tf.constant(-1.0 / 3.0, dtype))
        inverse_transpose = tf.linalg.matrix_transpose(adjugate(current)) / det
        return 0.5 * (gamma * current + inverse_transpose / gamma)

    return iterate(newton_step, tf.where(usable[..., None, None], completed, eye), iterations)


def _normalised_pixels(pixels: tf.Tensor, intrinsics: tf.Tensor) -> tf.Tensor:
    homogeneous = tf.concat([pixels, tf.ones_like(pixels[..., :1])], axis=-1)
    rays = tf.linalg.matmul(homogeneous, upper_triangular_inverse(intrinsics), transpose_b=True)
    return rays[..., :2] / rays[..., 2:]


def _rotation_subspace(
    system: GeometricSystem, rotation_transpose: tf.Tensor, scale: tf.Tensor | None = None
) -> tf.Tensor:
    """``G`` mapping ``(s, [omega], q', m)`` to ``(theta', m)``, with
    ``P_hat = s rotation_transpose - scale [omega]_x rotation_transpose`` (the first-order
    rotation update ``omega``, only when ``scale`` is given) and
    ``q_hat = q' - P_hat c``: ``(B, 12 + K, 4 + K)`` or ``(B, 12 + K, 7 + K)``."""
    dtype = rotation_transpose.dtype
    num_coefficients = system.problem.basis.shape[-1]
    batch = tf.shape(rotation_transpose)[0]
    inverse = camera_features_inverse(system.transform)
    back = tf.linalg.matrix_transpose(inverse)  # theta' = back theta
    # P_hat u + q_hat = P_hat (u - c) + q' with c the samples' weighted centre (the features'
    # origin, T^-1 e_4): centring decorrelates the scale column from the translation columns.
    centre = inverse[:, :3, 3]

    def column(linear: tf.Tensor) -> tf.Tensor:
        """theta' (B, 12, 1) of P_hat = linear (B, 3, 3), q' = 0."""
        padded = tf.concat([linear, -tf.linalg.matvec(linear, centre)[:, :, None]], axis=-1)
        return tf.reshape(tf.matmul(padded, back, transpose_b=True), [-1, CAMERA_UNKNOWNS, 1])

    columns = [column(rotation_transpose)]
    if scale is not None:
        generators = np.zeros((3, 3, 3))
        for i, (j, k) in enumerate(((1, 2), (2, 0), (0, 1))):  # [e_i]_x
            generators[i, k, j], generators[i, j, k] = 1.0, -1.0
        for generator in tf.unstack(tf.constant(generators, dtype)):
            columns.append(column(-scale[:, None, None] * tf.matmul(generator[None], rotation_transpose)))
    columns.append(
        tf.reshape(tf.einsum("kl,bi->bkil", tf.eye(3, dtype=dtype), back[:, :, 3]), [-1, CAMERA_UNKNOWNS, 3])
    )
    camera = tf.concat(columns, axis=-1)  # (B, 12, 4 or 7)
    width = camera.shape[-1]
    top = tf.concat([camera, tf.zeros([batch, CAMERA_UNKNOWNS, num_coefficients], dtype)], axis=-1)
    bottom = tf.concat(
        [tf.zeros([batch, num_coefficients, width], dtype), tf.eye(num_coefficients, batch_shape=[batch], dtype=dtype)],
        axis=-1,
    )
    return tf.concat([top, bottom], axis=-2)


def _solve_in_subspace(
    system: GeometricSystem,
    normal: tuple[tf.Tensor, tf.Tensor],
    subspace: tf.Tensor,
    ridge: float,
    refinement_steps: int,
    solver: str,
) -> tf.Tensor:
    """The solution ``x = G z`` (B, 12 + K) in the column space of ``subspace`` ``G``, from the
    single-image ``normal`` equations (matrix (B, n, n), right-hand side (B, n))."""
    full_matrix, full_rhs = normal
    matrix = tf.matmul(subspace, tf.matmul(full_matrix, subspace), transpose_a=True)
    rhs = tf.linalg.matvec(subspace, full_rhs, transpose_a=True)

    def gradient(z: tf.Tensor) -> tf.Tensor:
        full = structured.gradient(system.problem, tf.linalg.matvec(subspace, z))
        return tf.linalg.matvec(subspace, full, transpose_a=True)

    z = solve_refined(matrix, rhs, gradient, refinement_steps, ridge, solver)
    return tf.linalg.matvec(subspace, z)


def solve_geometry_known_intrinsics(
    pixels: tf.Tensor,
    depth: tf.Tensor,
    weights: tf.Tensor,
    mean: tf.Tensor,
    basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
    intrinsics: tf.Tensor,
    translation_weight: tf.Tensor | float = 0.0,
    z0: float = 500.0,
    ridge: float = 1e-6,
    refinement_steps: int = 1,
    solver: str = "cholesky",
    rotation_steps: int = 3,
) -> dict[str, tf.Tensor]:
    """Pose, depth scale and shape for known intrinsics (see the module docstring).

    Args:
        pixels, depth, weights, mean, basis, coefficient_weights, translation_weight, z0: As for
            :func:`~tfface.layers.geometric.geometric_system`.
        intrinsics: ``(B, 3, 3)``. Known ``K`` (pixels), upper triangular, last row ``[0, 0, 1]``.
        ridge, refinement_steps, solver: As for :func:`~tfface.layers.geometric.solve_geometry`.
        rotation_steps: Gauss-Newton steps on the rotation
            (0: the polar projection of the unconstrained estimate).

    Returns:
        dict: ``p_hat`` (B, 3, 3) in pixel units (``R^T K^-1 / psi``), ``q_hat`` (B, 3),
            ``coefficients`` (B, K), ``residual`` (B, P, 3) mm, ``well_posed`` (B,), and the camera
            ``K`` (the input), ``R`` (B, 3, 3) proper rotation, ``t`` (B, 3) mm, ``psi`` (B,).
    """
    intrinsics = tf.convert_to_tensor(intrinsics, pixels.dtype)
    normalised = _normalised_pixels(pixels, intrinsics)
    system = geometric_system(
        normalised, depth, weights, mean, basis, coefficient_weights, translation_weight, z0
    )
    normal = structured.normal_equations(system.problem)
    general = solve_refined(
        *normal, lambda x: structured.gradient(system.problem, x), refinement_steps, ridge, solver
    )
    p_hat_normalised, _ = inverse_camera(system, general)

    def projected(p_hat_normalised: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The nearest rotation (transposed) and the scale of ``P_hat_n``, from its first two
        columns (:func:`polar_rotation` completes the third)."""
        lateral = p_hat_normalised[..., :2]
        rotation_transpose = polar_rotation(tf.concat([lateral, tf.zeros_like(lateral[..., :1])], axis=-1))
        return rotation_transpose, tf.reduce_sum(lateral * rotation_transpose[..., :2], axis=[-2, -1]) / 2.0

    def rotation_step(rotation: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Gauss-Newton on the rotation: ``P_hat = s (I - [omega]_x) R^T`` to first order in omega."""
        subspace = _rotation_subspace(system, *rotation)
        step = _solve_in_subspace(system, normal, subspace, ridge, refinement_steps, solver)
        return projected(inverse_camera(system, step)[0])

    rotation_transpose, _ = iterate(rotation_step, projected(p_hat_normalised), rotation_steps)
    solution = _solve_in_subspace(
        system, normal, _rotation_subspace(system, rotation_transpose), ridge, refinement_steps, solver
    )
    outputs = geometric_outputs(system, solution, structured.residual(system.problem, solution))
    scale = tf.reduce_sum(outputs["p_hat"] * rotation_transpose, axis=[-2, -1]) / 3.0
    rotation = tf.linalg.matrix_transpose(rotation_transpose)
    outputs.update(
        p_hat=tf.matmul(outputs["p_hat"], upper_triangular_inverse(intrinsics)),
        K=intrinsics,
        R=rotation,
        t=-tf.linalg.matvec(rotation, outputs["q_hat"]),
        psi=1.0 / scale,
    )
    return outputs


def _shared_identity_selection(num_views: int, num_identity: int, num_coefficients: int) -> np.ndarray:
    """``S`` (V, 12 + K, Z): per-image unknowns ``[theta'_v, identity, expression_v]`` from the
    global ``z = [theta'_1, expression_1, ..., theta'_V, expression_V, identity]``."""
    num_expression = num_coefficients - num_identity
    per_view = CAMERA_UNKNOWNS + num_expression
    size = num_views * per_view + num_identity
    selection = np.zeros((num_views, CAMERA_UNKNOWNS + num_coefficients, size))
    for view in range(num_views):
        start = view * per_view
        own = list(range(start, start + CAMERA_UNKNOWNS))
        identity = list(range(num_views * per_view, size))
        expression = list(range(start + CAMERA_UNKNOWNS, start + per_view))
        selection[view, np.arange(CAMERA_UNKNOWNS + num_coefficients), own + identity + expression] = 1.0
    return selection


def solve_geometry_shared_identity(
    pixels: tf.Tensor,
    depth: tf.Tensor,
    weights: tf.Tensor,
    mean: tf.Tensor,
    basis: tf.Tensor,
    coefficient_weights: tf.Tensor,
    num_identity: int,
    translation_weight: tf.Tensor | float = 0.0,
    z0: float = 500.0,
    ridge: float = 1e-6,
    refinement_steps: int = 1,
    solver: str = "cholesky",
) -> dict[str, tf.Tensor]:
    """One identity, per-image cameras and expressions, for ``V`` images of each person.

    Args:
        pixels: ``(B, V, P, 2)``.
        depth, weights: ``(B, V, P)``.
        mean: ``(B, V, P, 3)``.
        basis: ``(B, V, P, 3, K)``. Columns
            ``[identity (num_identity), expression (K - num_identity)]``, the UV-3DMM's order.
        coefficient_weights: ``(K,)`` or ``(B, K)``. ``alpha_i^2``; the identity part is applied
            once per person.
        num_identity: Number of leading identity columns of ``basis``.
        translation_weight, z0, ridge, refinement_steps, solver: As for
            :func:`~tfface.layers.geometric.solve_geometry`
            (the translation prior applies to every image).

    Returns:
        dict: ``p_hat`` (B, V, 3, 3), ``q_hat`` (B, V, 3), ``identity`` (B, num_identity),
            ``expression`` (B, V, K - num_identity), ``coefficients`` (B, V, K) (identity repeated),
            ``residual`` (B, V, P, 3) mm, ``well_posed`` (B, V).
    """
    dtype = pixels.dtype
    num_views = pixels.shape[1]
    num_coefficients = basis.shape[-1]
    batch = tf.shape(pixels)[0]

    def flat(tensor: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], axis=0))

    alpha2 = tf.broadcast_to(tf.cast(coefficient_weights, dtype), [batch, num_coefficients])
    identity_alpha2 = alpha2[:, :num_identity]
    per_view_alpha2 = tf.concat([tf.zeros_like(identity_alpha2), alpha2[:, num_identity:]], axis=-1)
    system = geometric_system(
        flat(pixels), flat(depth), flat(weights), flat(mean), flat(basis),
        tf.repeat(per_view_alpha2, num_views, axis=0), translation_weight, z0,
    )
    size = CAMERA_UNKNOWNS + num_coefficients
    selection = tf.constant(_shared_identity_selection(num_views, num_identity, num_coefficients), dtype)
    identity_prior = tf.pad(identity_alpha2, [[0, 0], [selection.shape[-1] - num_identity, 0]])

    per_view_matrix, per_view_rhs = structured.normal_equations(system.problem)
    matrix = tf.einsum(
        "vnz,bvnm,vmy->bzy", selection, tf.reshape(per_view_matrix, [-1, num_views, size, size]), selection
    ) + tf.linalg.diag(identity_prior)
    rhs = tf.einsum("vnz,bvn->bz", selection, tf.reshape(per_view_rhs, [-1, num_views, size]))

    def expand(z: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tf.einsum("vnz,bz->bvn", selection, z), [-1, size])

    def gradient(z: tf.Tensor) -> tf.Tensor:
        per_view = tf.reshape(structured.gradient(system.problem, expand(z)), [-1, num_views, size])
        return tf.einsum("vnz,bvn->bz", selection, per_view) - identity_prior * z

    z = solve_refined(matrix, rhs, gradient, refinement_steps, ridge, solver)
    solution = expand(z)
    outputs = geometric_outputs(system, solution, structured.residual(system.problem, solution))
    outputs = {
        name: tf.reshape(value, tf.concat([[batch, num_views], tf.shape(value)[1:]], axis=0))
        for name, value in outputs.items()
    }
    outputs.update(identity=z[:, -num_identity:], expression=outputs["coefficients"][:, :, num_identity:])
    return outputs
