"""Input and output checks shared by the least-squares layers.

Bad input gets a clear :class:`~tfface.errors.InputError` instead of a crash (or a NaN) deep in
TensorFlow; a non-finite solution a :class:`~tfface.errors.SolveError`. Static shapes are checked
in graph mode too; values only in eager mode.
"""

from __future__ import annotations

import tensorflow as tf

from tfface.errors import InputError, SolveError


def check_samples(
    samples: dict[str, tuple[tf.Tensor, tuple[int | None, ...]]],
    weights: tf.Tensor,
    coefficient_weights: tf.Tensor,
    basis_name: str,
) -> None:
    """Check per-sample tensors ``(B, P, *trailing)``, the weights and the prior weights.

    Args:
        samples: dict. ``name -> (tensor, trailing)``; ``None`` in ``trailing`` must be a static
            dimension of any size. ``weights`` must be one of them with ``trailing = ()``.
        weights: ``(B, P)``. Sample weights, non-negative.
        coefficient_weights: ``(K,)`` or ``(B, K)``. Non-negative prior weights, ``K`` the last
            dimension of ``samples[basis_name]``.
        basis_name: The entry whose last dimension is the number of coefficients.

    Raises:
        InputError: Wrong rank or trailing dimensions, disagreeing ``(B, P)``, or (eager mode)
            non-finite or negative values.
    """
    for name, (tensor, trailing) in samples.items():
        shape = tensor.shape
        expected = "(B, P" + "".join(f", {d or 'K'}" for d in trailing) + ")"
        if shape.rank != 2 + len(trailing) or any(
            shape[2 + i] is None or (d is not None and shape[2 + i] != d) for i, d in enumerate(trailing)
        ):
            raise InputError(f"{name} must have shape {expected} (static trailing dims), got {shape}")
    leading = {name: tensor.shape[:2] for name, (tensor, _) in samples.items()}
    first = next(iter(leading.values()))
    if not all(shape.is_compatible_with(first) for shape in leading.values()):
        raise InputError(f"batch/sample dimensions disagree: { {k: str(v) for k, v in leading.items()} }")
    num_coefficients = samples[basis_name][0].shape[-1]
    if coefficient_weights.shape.rank not in (1, 2) or coefficient_weights.shape[-1] != num_coefficients:
        raise InputError(
            f"coefficient_weights must be (K,) or (B, K) with K={num_coefficients} "
            f"(from {basis_name}), got {coefficient_weights.shape}"
        )
    if tf.executing_eagerly():
        named = {name: tensor for name, (tensor, _) in samples.items()}
        for name, tensor in {**named, "coefficient_weights": coefficient_weights}.items():
            if not bool(tf.reduce_all(tf.math.is_finite(tensor))):
                raise InputError(f"{name} contains NaN or infinite values")
        if bool(tf.reduce_any(weights < 0)) or bool(tf.reduce_any(coefficient_weights < 0)):
            raise InputError("weights and coefficient_weights must be non-negative")


def raise_if_not_finite(outputs: dict[str, tf.Tensor], solve: str) -> None:
    """In eager mode, raise :class:`SolveError` if any output is NaN or infinite."""
    if tf.executing_eagerly():
        for name, value in outputs.items():
            if not bool(tf.reduce_all(tf.math.is_finite(value))):
                raise SolveError(f"the {solve} least-squares solve produced a non-finite {name}")
