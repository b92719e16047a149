"""Symmetric positive definite (SPD) linear solves for the least-squares layers.

Two interchangeable, differentiable solvers of ``A x = b`` for SPD ``A``:

``"cholesky"``
    ``tf.linalg.cholesky`` and ``tf.linalg.cholesky_solve``: the training default.
``"gauss_jordan"``
    Gauss-Jordan elimination without pivoting (stable for SPD matrices) in a ``tf.while_loop``
    built only from ops that are TFLite built-ins (``WHILE``, ``GATHER``, ``ONE_HOT``, ``SUB``,
    ``MUL``, ``DIV``): ``Cholesky`` and ``MatrixSolve`` are not TFLite built-ins and no Flex
    delegate is available, so exported models use this one.

Both have the same analytic gradient (``tf.custom_gradient``): for ``x = A^-1 b`` and an upstream
gradient ``g``, ``db = A^-1 g`` (one more solve, ``A`` is symmetric) and ``dA = -db x^T``; no
intermediate of the elimination loop is kept for the backward pass.

:func:`solve_normal_equations` adds the Jacobi (diagonal) scaling and the small ridge the
least-squares layers need before calling either solver.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfface.errors import InputError

#: Names accepted by :func:`solve_spd` and the least-squares layers' ``solver`` argument.
SOLVERS: tuple[str, ...] = ("cholesky", "gauss_jordan")


def _gauss_jordan(matrix: tf.Tensor, rhs: tf.Tensor) -> tf.Tensor:
    """Solve ``matrix @ x = rhs`` by Gauss-Jordan elimination of the augmented matrix.

    Step ``k`` divides row ``k`` by its pivot and subtracts its multiples from every other row:
    ``M <- M - (M[:, k] - e_k) (M[k, :] / M[k, k])``. After ``n`` steps the left block is the
    identity and the right block is the solution.

    Args:
        matrix: ``(..., n, n)`` SPD matrices.
        rhs: ``(..., n, r)`` right-hand sides.

    Returns:
        ``(..., n, r)`` solutions.
    """
    n = matrix.shape[-1]
    augmented = tf.concat([matrix, rhs], axis=-1)

    def step(k: tf.Tensor, current: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        unit = tf.one_hot(k, n, dtype=current.dtype)
        row = tf.gather(current, k, axis=-2)  # (..., n + r)
        column = tf.gather(current, k, axis=-1)  # (..., n)
        pivot = tf.gather(row, k, axis=-1)[..., None]  # (..., 1)
        update = (column - unit)[..., :, None] * (row / pivot)[..., None, :]
        return k + 1, current - update

    _, eliminated = tf.while_loop(
        lambda k, _: k < n, step, (tf.constant(0, tf.int32), augmented), maximum_iterations=n
    )
    return eliminated[..., n:]


def _cholesky_solver(matrix: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
    factor = tf.linalg.cholesky(matrix)
    return lambda rhs: tf.linalg.cholesky_solve(factor, rhs)


def _gauss_jordan_solver(matrix: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
    return lambda rhs: _gauss_jordan(matrix, rhs)


_FACTORISERS = {"cholesky": _cholesky_solver, "gauss_jordan": _gauss_jordan_solver}


def solve_spd(matrix: tf.Tensor, rhs: tf.Tensor, method: str = "cholesky") -> tf.Tensor:
    """Solve ``matrix @ x = rhs`` for symmetric positive definite ``matrix``.

    Args:
        matrix: ``(..., n, n)`` SPD matrices (float32 or float64); ``n`` must be static.
        rhs: ``(..., n)`` vectors or ``(..., n, r)`` matrices of right-hand sides.
        method: one of :data:`SOLVERS`.

    Returns:
        ``x`` with the shape of ``rhs``. Differentiable in ``matrix`` and ``rhs`` (the gradient
        treats ``matrix`` as a general matrix: ``d matrix = -(A^-1 g) x^T``).

    Raises:
        InputError: unknown ``method`` or mismatched shapes.
    """
    if method not in _FACTORISERS:
        raise InputError(f"unknown solver {method!r}; expected one of {SOLVERS}")
    matrix = tf.convert_to_tensor(matrix)
    rhs = tf.convert_to_tensor(rhs, dtype=matrix.dtype)
    if matrix.shape.rank is None or matrix.shape.rank < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise InputError(f"matrix must be (..., n, n), got shape {matrix.shape}")
    if matrix.shape[-1] is None:
        raise InputError("the system size n must be static")
    vector = rhs.shape.rank == matrix.shape.rank - 1
    if vector:
        rhs = rhs[..., None]
    if rhs.shape[-2] != matrix.shape[-1]:
        raise InputError(f"rhs {rhs.shape} does not match matrix {matrix.shape}")
    solution = _solve_with_gradient(matrix, rhs, method)
    return solution[..., 0] if vector else solution


def _solve_with_gradient(matrix: tf.Tensor, rhs: tf.Tensor, method: str) -> tf.Tensor:
    @tf.custom_gradient
    def solve(a: tf.Tensor, b: tf.Tensor):
        solver = _FACTORISERS[method](a)
        x = solver(b)

        def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            grad_b = solver(upstream)
            return -tf.matmul(grad_b, x, transpose_b=True), grad_b

        return x, gradient

    return solve(matrix, rhs)


def solve_normal_equations(
    matrix: tf.Tensor, rhs: tf.Tensor, ridge: float = 1e-6, method: str = "cholesky"
) -> tf.Tensor:
    """Solve SPD normal equations after Jacobi scaling, with a relative ridge.

    With ``D = diag(matrix)^-1/2`` (diagonal entries below ``1e-20 x`` the largest one, or zero,
    are clamped), solves ``(D A D + ridge I) y = D b`` and returns ``x = D y``, i.e. the solution
    of ``(A + ridge D^-2) x = b``. The scaling removes the disparity of column scales (pixel
    coordinates times depth next to millimetre bases); the ridge makes a rank-deficient
    system (e.g. a zero column) positive definite, pulling undetermined unknowns to 0 while
    biasing determined ones by a relative ``O(ridge x condition)``. The scaling is treated as
    a constant by the gradient (exact up to that bias).

    Args:
        matrix: ``(..., n, n)`` symmetric positive semi-definite matrices.
        rhs: ``(..., n)`` right-hand sides.
        ridge: relative Tikhonov weight added to the unit diagonal of the scaled system.
        method: one of :data:`SOLVERS`.

    Returns:
        ``(..., n)`` solutions, finite for any finite input.
    """
    eye = tf.eye(matrix.shape[-1], dtype=matrix.dtype)
    diagonal = tf.stop_gradient(tf.reduce_sum(matrix * eye, axis=-1))  # diag_part: not a TFLite builtin
    floor = tf.maximum(
        1e-20 * tf.reduce_max(diagonal, axis=-1, keepdims=True),
        tf.constant(1e-30, matrix.dtype),
    )
    scale = tf.math.rsqrt(tf.maximum(diagonal, floor))
    scaled = matrix * scale[..., :, None] * scale[..., None, :]
    scaled = scaled + ridge * eye
    return scale * solve_spd(scaled, rhs * scale, method)
