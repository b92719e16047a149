"""Weighted linear least squares through the normal equations, with iterative refinement.

The geometric and photometric layers both minimise

.. math:: \\sum_j \\omega_j \\|A_j x - b_j\\|^2 + (x - x_0)^T \\Gamma (x - x_0)

over ``x``, with per-sample design rows ``A_j`` and a diagonal-or-small prior ``Gamma``. They form
the normal equations ``N x = r`` with few large matrix products (their own, structure-exploiting
code), then call :func:`solve_refined` here. In float32 the normal matrix squares the condition
number of the design, so one step of iterative refinement recomputes the gradient
``A^T W (b - A x) + Gamma (x_0 - x)`` *from the samples* (not from ``N``) and solves for a
correction with the same ``N``: the fixed point is the exact least-squares solution, independent
of rounding in ``N`` and of the ridge that :func:`~tfface.layers.linear_solve.solve_normal_equations`
adds (the ridge never moves a direction the data and prior leave undetermined, because the
gradient has no component there). Measured on exact samples of the default model (153 shape
modes, 10,000 samples): about 5e-3 relative coefficient error without refinement (mostly the
ridge's bias), about 1e-5 after one step.

Callers restricting the solution to a subspace ``x = G z`` (known intrinsics, identity shared by
several images) pass the reduced system ``G^T N G z = G^T r`` and a reduced gradient.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfface.layers.linear_solve import solve_normal_equations

#: ``gradient(x)`` returns ``A^T W (b - A x) + Gamma (x_0 - x)`` for a batch of solutions x.
GradientFn = Callable[[tf.Tensor], tf.Tensor]


def solve_refined(
    matrix: tf.Tensor,
    rhs: tf.Tensor,
    gradient: GradientFn,
    refinement_steps: int = 1,
    ridge: float = 1e-6,
    method: str = "cholesky",
) -> tf.Tensor:
    """Solve SPD normal equations, then refine with gradients recomputed from the data.

    Args:
        matrix: ``(B, n, n)`` float. Normal matrix ``A^T W A + Gamma``.
        rhs: ``(B, n)`` float. Right-hand side ``A^T W b + Gamma x_0``.
        gradient: callable. Maps ``(B, n)`` solutions to ``(B, n)`` gradients of the half objective
            (see module doc).
        refinement_steps: Number of refinement steps (0 disables).
        ridge: Relative ridge of the Jacobi-scaled system.
        method: Solver name, see :data:`tfface.layers.linear_solve.SOLVERS`.

    Returns:
        x: ``(B, n)``. The solution.
    """
    x = solve_normal_equations(matrix, rhs, ridge=ridge, method=method)
    for _ in range(refinement_steps):
        x = x + solve_normal_equations(matrix, gradient(x), ridge=ridge, method=method)
    return x
