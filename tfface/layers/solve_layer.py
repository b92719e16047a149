"""Common base of the least-squares Keras layers: solver options, input checks, finiteness."""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from tfface.errors import InputError
from tfface.layers.least_squares_checks import raise_if_not_finite
from tfface.layers.linear_solve import SOLVERS


class LeastSquaresLayer(keras.layers.Layer):
    """A Keras layer around a closed-form least-squares solve.

    Args:
        ridge: Relative ridge of the Jacobi-scaled normal equations.
        refinement_steps: Iterative-refinement steps from the samples (recover the float32 accuracy
            the normal equations lose; 0 is faster and about 1e-3 instead of 1e-5 relative on exact
            data).
        solver: The SPD solver, ``"cholesky"`` or ``"gauss_jordan"`` (TFLite built-in ops
            only).
    """

    #: Name of the solve in error messages.
    solve_name = "least-squares"

    def __init__(self, ridge: float = 1e-6, refinement_steps: int = 1, solver: str = "cholesky", **kwargs) -> None:
        # The solves need at least float32: a global mixed_float16 policy must not reach them.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if solver not in SOLVERS:
            raise InputError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
        self.ridge = float(ridge)
        self.refinement_steps = int(refinement_steps)
        self.solver = solver

    def solve_checked(
        self,
        check: Callable[..., None],
        solve: Callable[..., dict[str, tf.Tensor]],
        tensors: tuple,
        **options,
    ) -> dict[str, tf.Tensor]:
        """Cast ``tensors`` to the compute dtype, ``check`` them, ``solve`` with the solver
        options and ``options``, and (eagerly) reject a non-finite result."""
        tensors = [tf.convert_to_tensor(t, self.compute_dtype) for t in tensors]
        check(*tensors)
        outputs = solve(
            *tensors, ridge=self.ridge, refinement_steps=self.refinement_steps, solver=self.solver, **options
        )
        raise_if_not_finite(outputs, self.solve_name)
        return outputs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(ridge=self.ridge, refinement_steps=self.refinement_steps, solver=self.solver)
        return config
