r"""Weighted least squares with the three-channel row structure of eqs. 33-41, with an analytic
gradient.

Both solves of the paper have, for every sample ``j`` and channel ``c`` (a coordinate axis for
the geometry, a colour for the photometry), one row

.. math:: A_{jc} x = [\,e_c \otimes f_{jc},\; -M_{jc}\,] \, x \approx b_{jc}, \qquad
          \text{weight } \omega_j,

with small per-row features :math:`f_{jc}` (``q`` of them: ``(d x, d y, d, 1)`` or
``i_jc sh(n_j)``) that only meet the channel's own ``q`` unknowns, a model basis row
:math:`M_{jc}` (``K`` columns: shape or albedo modes) and target :math:`b_{jc}` (the model
mean). Unknowns are ``x = [x_0 (q), x_1 (q), x_2 (q), x_m (K)]``. With a prior
``(x^T Gamma x - 2 x^T gamma)`` the solution is ``x = N^-1 r``, ``N = A^T W A + Gamma``,
``r = A^T W b + gamma``.

Forming ``N`` never materialises the Kronecker zeros: one ``(3P, K) x (3P, K)`` product for
the model block, and one ``(P, q + 3) x (P, 3K)`` (shared features) or ``(P, 3q + 3) x (P, 3K)``
product with the channel diagonal kept (per-channel features) for the cross block and the
model part of the right-hand side together. Both are accumulated over chunks of samples
(:func:`_basis_products`), so that forming ``N`` writes no basis-sized weighted copy.

Gradient. Autodiff through the normal equations would write one ``(B, 3P, K)`` gradient per use
of ``M`` (forming, refinement, residual), which dominates the cost. :func:`solve` instead
returns the exact gradient of the least-squares minimiser: with residual ``e = A x - b``,
upstream gradients ``g_x`` and ``g_e`` and the adjoint ``z = N^-1 (g_x + A^T g_e)``,

.. math::
    \partial L / \partial A_i = s_{1i} z^T + s_{2i} x^T, \quad
    s_{1i} = -\omega_i e_i, \; s_{2i} = g_{e,i} - \omega_i A_i z, \qquad
    \partial L / \partial b_i = -s_{2i}, \quad
    \partial L / \partial \omega_j = -\sum_c (A_{jc} z) e_{jc},

and ``dL/dGamma = -z x^T``, ``dL/dgamma = z``. The model-basis gradient is then one
``(3P, 2) x (2, K)`` product: the backward pass reads ``M`` twice and writes it once.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tfface.layers.linear_solve import solve_normal_equations
from tfface.layers.normal_equations import solve_refined

#: Samples per chunk of :func:`_basis_products` (153 modes: 1.9 MB per chunk). On a 2-core AVX2
#: machine the geometric forward solve is 1.5 times faster than with 256 samples (256-4,096 side
#: by side, 1,024 best for both solves); on an AVX-512 machine 256-2,048 were within noise.
CHUNK_SAMPLES = 1024


class LinearProblem(NamedTuple):
    """A structured weighted least-squares problem (see the module docstring).

    Attributes:
        features: ``(B, P, q)`` or ``(B, P, 3, q)``. ``f_jc``: shared by the three channels
            (rank 3) or per channel (rank 4).
        weights: ``(B, P)``. ``omega_j``.
        basis: ``(B, P, 3, K)``. ``M_jc``.
        target: ``(B, P, 3)``. ``b_jc``.
        prior_matrix: ``(B, n, n)``. ``Gamma``, ``n = 3q + K``.
        prior_rhs: ``(B, n)``. ``gamma``.
    """

    features: tf.Tensor
    weights: tf.Tensor
    basis: tf.Tensor
    target: tf.Tensor
    prior_matrix: tf.Tensor
    prior_rhs: tf.Tensor


def _shared(features: tf.Tensor) -> bool:
    return features.shape.rank == 3


def _channel_diagonal(blocks: tf.Tensor) -> tf.Tensor:
    """``(B, 3, a, 3, X) -> (B, 3, a, X)``: keep the blocks whose two channel indices agree.

    A masked sum rather than ``tf.linalg.diag_part``, which is not a TFLite built-in op.
    """
    mask = tf.reshape(tf.eye(3, dtype=blocks.dtype), [1, 3, 1, 3, 1])
    return tf.reduce_sum(blocks * mask, axis=3)


def _feature_products(features: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """``sum_j f_jc (x) values_jc`` per channel: ``(B, 3, q, X)`` for ``values`` (B, P, 3, X)."""
    batch, width = tf.shape(values)[0], values.shape[-1]
    flat_values = tf.reshape(values, [batch, -1, 3 * width])
    q = features.shape[-1]
    if _shared(features):
        product = tf.matmul(features, flat_values, transpose_a=True)  # (B, q, 3X)
        return tf.transpose(tf.reshape(product, [-1, q, 3, width]), [0, 2, 1, 3])
    product = tf.matmul(tf.reshape(features, [batch, -1, 3 * q]), flat_values, transpose_a=True)
    return _channel_diagonal(tf.reshape(product, [-1, 3, q, 3, width]))


def _weighted(problem: LinearProblem) -> tf.Tensor:
    weights = problem.weights[..., None]
    return weights * problem.features if _shared(problem.features) else weights[..., None] * problem.features


def _block_diagonal(blocks: tf.Tensor) -> tf.Tensor:
    """``(B, 3, q, q) -> (B, 3q, 3q)`` block-diagonal."""
    q = blocks.shape[-1]
    eye = tf.eye(3, dtype=blocks.dtype)
    return tf.reshape(tf.einsum("cd,bcij->bcidj", eye, blocks), [-1, 3 * q, 3 * q])


def _flat_basis(problem: LinearProblem) -> tf.Tensor:
    return tf.reshape(problem.basis, [tf.shape(problem.basis)[0], -1, problem.basis.shape[-1]])


def _split(problem: LinearProblem, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    q = problem.features.shape[-1]
    return tf.reshape(x[:, : 3 * q], [-1, 3, q]), x[:, 3 * q :]


def _features_times(problem: LinearProblem, blocks: tf.Tensor) -> tf.Tensor:
    """``f_jc . blocks_c`` (B, P, 3) for per-channel vectors ``blocks`` (B, 3, q)."""
    if _shared(problem.features):
        return tf.matmul(problem.features, blocks, transpose_b=True)
    # Product and sum rather than einsum: on CPU the photometric solve's forward+backward takes
    # 5.9 instead of 6.8 ms per image (batch 8, 10,000 samples, side by side in one process).
    return tf.reduce_sum(problem.features * blocks[:, None], axis=-1)


def _basis_times(problem: LinearProblem, coefficients: tf.Tensor) -> tf.Tensor:
    """``M_jc . coefficients`` (B, P, 3)."""
    # The row vector times the transposed basis: about twice as fast as matvec(basis, x) on CPU,
    # whose batched GEMV reads the basis at a sixth of the memory bandwidth.
    row = tf.matmul(coefficients[:, None, :], _flat_basis(problem), transpose_b=True)
    return tf.reshape(row, tf.shape(problem.target))


def _transpose_times(problem: LinearProblem, row_values: tf.Tensor) -> tf.Tensor:
    """``A^T v`` (B, n) for one value per row ``v`` (B, P, 3) (no weights)."""
    feature_part = _feature_products(problem.features, row_values[..., None])[..., 0]
    # A row vector times the basis: faster than matvec(..., transpose_a=True) on CPU.
    row = tf.reshape(row_values, [tf.shape(row_values)[0], 1, -1])
    basis_part = -tf.matmul(row, _flat_basis(problem))[:, 0]
    return tf.concat([tf.reshape(feature_part, [tf.shape(basis_part)[0], -1]), basis_part], axis=-1)


def predict(problem: LinearProblem, x: tf.Tensor) -> tf.Tensor:
    """``A_jc x`` for every row, ``(B, P, 3)``."""
    blocks, coefficients = _split(problem, x)
    return _features_times(problem, blocks) - _basis_times(problem, coefficients)


def residual(problem: LinearProblem, x: tf.Tensor) -> tf.Tensor:
    """``A x - b`` per row, ``(B, P, 3)``."""
    return predict(problem, x) - problem.target


def _basis_products(problem: LinearProblem) -> tuple[tf.Tensor, tf.Tensor]:
    """``M^T W M`` (B, K, K) and ``[f, b]^T W M`` (B, q' + 3, 3K), ``q' = q`` (shared) or ``3q``.

    One pass over the basis, image by image and :data:`CHUNK_SAMPLES` samples at a time in
    nested ``tf.while_loop`` loops: each chunk (a contiguous slice along the first axis of the
    basis reshaped to ``(B P, 3, K)``) is weighted and enters both products while it is in
    cache, so the weighted basis is never materialised whole (a basis-sized temporary costs a
    full write and read of memory). Same products as one batched matmul, summed in chunks. The
    left factor of the second product carries the features and the targets side by side: the
    cross block and the model part of the right-hand side come from one product.
    """
    basis, dtype = problem.basis, problem.basis.dtype
    batch = basis.shape[0] if basis.shape[0] is not None else tf.shape(basis)[0]  # static if known
    num_samples, num_basis = tf.shape(basis)[1], basis.shape[-1]
    features = problem.features
    width = features.shape[-1] * (1 if _shared(features) else 3) + 3
    left = tf.reshape(
        tf.concat([tf.reshape(features, [batch, num_samples, width - 3]), problem.target], axis=-1), [-1, width]
    )
    rows = tf.reshape(basis, [-1, 3, num_basis])  # (B P, 3, K)
    weights = tf.reshape(problem.weights, [-1])
    num_chunks = (num_samples + CHUNK_SAMPLES - 1) // CHUNK_SAMPLES

    def image(entry: tf.Tensor, basis_block: tf.Tensor, product: tf.Tensor):
        first, last = entry * num_samples, (entry + 1) * num_samples

        def chunk_products(index: tf.Tensor, block: tf.Tensor, cross: tf.Tensor):
            begin = first + index * CHUNK_SAMPLES
            part = slice(begin, tf.minimum(begin + CHUNK_SAMPLES, last))
            chunk = rows[part]  # (R, 3, K)
            weighted = weights[part, None, None] * chunk
            block += tf.matmul(
                tf.reshape(weighted, [-1, num_basis]), tf.reshape(chunk, [-1, num_basis]), transpose_a=True
            )
            cross += tf.matmul(left[part], tf.reshape(weighted, [-1, 3 * num_basis]), transpose_a=True)
            return index + 1, block, cross

        _, block, cross = tf.while_loop(
            lambda index, *_: index < num_chunks,
            chunk_products,
            (tf.constant(0), tf.zeros([num_basis, num_basis], dtype), tf.zeros([width, 3 * num_basis], dtype)),
        )
        here = tf.one_hot(entry, batch, dtype=dtype)[:, None, None]
        return entry + 1, basis_block + here * block, product + here * cross

    initial = (
        tf.constant(0),
        tf.zeros([batch, num_basis, num_basis], dtype),
        tf.zeros([batch, width, 3 * num_basis], dtype),
    )
    _, basis_block, product = tf.while_loop(lambda entry, *_: entry < batch, image, initial)
    return basis_block, product


def normal_equations(problem: LinearProblem) -> tuple[tf.Tensor, tf.Tensor]:
    """``N = A^T W A + Gamma`` (B, n, n) and ``r = A^T W b + gamma`` (B, n)."""
    weighted = _weighted(problem)
    q, num_basis = problem.features.shape[-1], problem.basis.shape[-1]
    if _shared(problem.features):
        block = tf.matmul(weighted, problem.features, transpose_a=True)
        feature_block = _block_diagonal(tf.stack([block] * 3, axis=1))
    else:
        feature_block = _block_diagonal(_feature_products(weighted, problem.features))
    basis_block, product = _basis_products(problem)
    if _shared(weighted):
        cross = tf.transpose(tf.reshape(product[:, :q], [-1, q, 3, num_basis]), [0, 2, 1, 3])
    else:
        cross = _channel_diagonal(tf.reshape(product[:, : 3 * q], [-1, 3, q, 3, num_basis]))
    cross = tf.reshape(cross, [-1, 3 * q, num_basis])
    target_rows = _channel_diagonal(tf.reshape(product[:, -3:], [-1, 3, 1, 3, num_basis]))
    basis_rhs = -tf.reduce_sum(target_rows, axis=[1, 2])
    matrix = tf.concat(
        [
            tf.concat([feature_block, -cross], axis=-1),
            tf.concat([-tf.linalg.matrix_transpose(cross), basis_block], axis=-1),
        ],
        axis=-2,
    )
    feature_rhs = tf.reshape(_feature_products(weighted, problem.target[..., None]), [-1, 3 * q])
    rhs = tf.concat([feature_rhs, basis_rhs], axis=-1)
    return matrix + problem.prior_matrix, rhs + problem.prior_rhs


def gradient(problem: LinearProblem, x: tf.Tensor) -> tf.Tensor:
    """``A^T W (b - A x) + gamma - Gamma x`` from the samples, ``(B, n)``."""
    weighted_residual = problem.weights[..., None] * residual(problem, x)
    return -_transpose_times(problem, weighted_residual) + problem.prior_rhs - tf.linalg.matvec(
        problem.prior_matrix, x
    )


def solve(
    problem: LinearProblem, ridge: float = 1e-6, refinement_steps: int = 1, method: str = "cholesky"
) -> tuple[tf.Tensor, tf.Tensor]:
    """Solution ``x`` (B, n) and residual ``A x - b`` (B, P, 3), with the analytic gradient.

    The forward pass forms the normal equations, solves them (Jacobi scaling, ridge, SPD
    solver ``method``) and refines ``refinement_steps`` times from the samples
    (:func:`~tfface.layers.normal_equations.solve_refined`). The gradient (module docstring)
    holds for the exact minimiser, so it ignores the ridge's ``O(ridge)`` bias.
    """

    @tf.custom_gradient
    def run(features, weights, basis, target, prior_matrix, prior_rhs):
        current = LinearProblem(features, weights, basis, target, prior_matrix, prior_rhs)
        matrix, rhs = normal_equations(current)
        x = solve_refined(
            matrix, rhs, lambda v: gradient(current, v), refinement_steps, ridge, method
        )
        error = residual(current, x)

        def backward(grad_x, grad_error):
            grad_x = tf.zeros_like(x) if grad_x is None else grad_x
            grad_error = tf.zeros_like(error) if grad_error is None else grad_error
            adjoint = solve_normal_equations(
                matrix, grad_x + _transpose_times(current, grad_error), ridge=ridge, method=method
            )
            adjoint_rows = predict(current, adjoint)  # A_i z
            s1 = -weights[..., None] * error
            s2 = grad_error - weights[..., None] * adjoint_rows
            blocks_z, basis_z = _split(current, adjoint)
            blocks_x, basis_x = _split(current, x)
            feature_grad = s1[..., None] * blocks_z[:, None] + s2[..., None] * blocks_x[:, None]
            if _shared(features):
                feature_grad = tf.reduce_sum(feature_grad, axis=-2)
            batch = tf.shape(x)[0]
            pair = tf.stack([tf.reshape(s1, [batch, -1]), tf.reshape(s2, [batch, -1])], axis=-1)
            # The sign goes on the small factor: negating the (B, 3P, K) product is one more
            # basis-sized pass (forward+backward 4-8% slower, side by side).
            basis_grad = tf.matmul(pair, -tf.stack([basis_z, basis_x], axis=-2))  # (B, 3P, K)
            return (
                feature_grad,
                -tf.reduce_sum(adjoint_rows * error, axis=-1),
                tf.reshape(basis_grad, tf.shape(basis)),
                -s2,
                -adjoint[:, :, None] * x[:, None, :],
                adjoint,
            )

        return (x, error), backward

    return run(*problem)
