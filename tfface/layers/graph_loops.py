"""A fixed number of steps as one graph loop."""

from __future__ import annotations

from typing import Callable, TypeVar

import tensorflow as tf

State = TypeVar("State")


def iterate(step: Callable[[State], State], initial: State, times: int) -> State:
    """``step`` applied ``times`` times to ``initial``.

    A ``tf.while_loop``, not a Python loop: a traced graph (SavedModel, TFLite ``WHILE``) holds the
    step once however many times it runs, and the loop is differentiable. Eagerly it runs as a
    Python loop. ``times == 0`` returns ``initial`` without tracing ``step``.

    Args:
        step: maps a state (a tensor or a nested structure of tensors) to one of the same
            structure, shapes and dtypes.
        initial: the first state.
        times: number of steps (a Python int, >= 0).

    Returns:
        The state after ``times`` steps.
    """
    if times == 0:
        return initial
    return tf.while_loop(lambda _: True, lambda state: (step(state),), (initial,), maximum_iterations=times)[0]
