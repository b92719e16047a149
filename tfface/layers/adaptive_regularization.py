r"""Adaptive per-coefficient regularisation weights (supplement G, eq. 18).

During training the weight :math:`\omega_i` of each 3DMM coefficient in :math:`E_{stat}` is
adjusted so that the exponential average of the coefficient's square stays at 1, its prior
variance. The same weights regularise the geometric least squares: they are the
:math:`\alpha_i^2` of the regularisation rows in eq. 35 (there :math:`\alpha` names a weight;
in eq. 18 :math:`\alpha_{i,j}` is the coefficient itself).

Eq. 18, implemented literally. After iteration :math:`j - 1` produced coefficients
:math:`\alpha_{i,j-1}` with weights :math:`\omega_{i,j-1}`, the weights for iteration
:math:`j` are

.. math::
    E[\alpha_i^2]_j = (1 - \theta)\, \alpha_{i,j-1}^2 + \theta\, E[\alpha_i^2]_{j-1}, \qquad
    k_{i,j} = \max(\min(E[\alpha_i^2]_j, \alpha^2_{max}), \alpha^2_{min}),

.. math::
    E[\omega_i]_j = (1 - \theta)\, \omega_{i,j-1} + \theta\, E[\omega_i]_{j-1}, \qquad
    \omega_{i,j} = \max(\min(k_{i,j} E[\omega_i]_j, \omega_{max}), \omega_{min}),

with :math:`\theta = 0.05`, :math:`\omega \in [10^{-4}, 10^4]`, :math:`k \in [0.99, 1.01]`,
:math:`E[\alpha^2]_0 = E[\omega]_0 = 0.1`. Interpretation, where the supplement is silent or
ambiguous:

- :math:`\alpha_{i,j-1}^2` of a minibatch is the mean over its images of the squared
  coefficient.
- The initial weight :math:`\omega_{i,0}` (used by the first solve) is not given; it is
  ``initial_weight`` = :math:`E[\omega]_0` = 0.1 by default.
- As printed, :math:`\theta` weights the *previous average* and :math:`1 - \theta = 0.95` the
  newest value, so with :math:`\theta = 0.05` both averages follow the latest iteration
  closely, while the text calls :math:`\theta` the "update ratio", which suggests the usual
  :math:`E_j = (1 - \theta) E_{j-1} + \theta x`. The default follows the equation, and the
  text's "k represents the rate of change" supports it: then :math:`\omega_{i,j} \approx
  k_{i,j}\, \omega_{i,j-1}`, so the weights grow by about 1% per iteration while the
  average square exceeds 1 and shrink by about 1% while it is below. Pass ``theta=0.95`` for
  the other reading, where :math:`\omega_{i,j} = k_{i,j} E[\omega_i]_j` follows a slow
  20-iteration average and the weights move only about 0.05% per iteration.
- A minibatch whose mean square is not finite (a failed solve) leaves that coefficient's state
  unchanged.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfface.errors import InputError

__all__ = ["AdaptiveRegularizer"]


@keras.saving.register_keras_serializable(package="tfface")
class AdaptiveRegularizer(keras.layers.Layer):
    """Per-coefficient adaptive weights of supplement G (eq. 18) as non-trainable state.

    State (non-trainable float32 variables of shape (K,), saved with the model and in
    ``tf.train.Checkpoint``): ``omega`` (the weights :math:`\\omega_i`), ``mean_squared``
    (:math:`E[\\alpha_i^2]`) and ``mean_omega`` (:math:`E[\\omega_i]`), plus ``iterations``
    (int64, number of updates).

    Use per training step: solve with :meth:`weights_for_solve`, compute E_stat with
    :meth:`loss_weights` (the same weights), then :meth:`update` with the fitted coefficients,
    or call the layer: ``layer(coefficients, training=True)`` returns the weights in force
    (broadcast to the coefficients' shape) and then updates; with ``training`` false or
    ``None`` it only returns them.

    Args:
        num_coefficients: K, the number of regularised coefficients (shape + expression).
        theta: Weight of the previous averages in eq. 18 (see the module docstring), in [0, 1].
        weight_range: ``(float, float)``. :math:`(\\omega_{min}, \\omega_{max})`.
        rate_range: ``(float, float)``. :math:`(\\alpha^2_{min}, \\alpha^2_{max})`, the clamp of the
            rate of change ``k``.
        initial_mean_squared, initial_mean_weight, initial_weight: :math:`E[\\alpha^2]_0`,
            :math:`E[\\omega]_0` and :math:`\\omega_0`.
    """

    def __init__(
        self,
        num_coefficients: int,
        theta: float = 0.05,
        weight_range: tuple[float, float] = (1e-4, 1e4),
        rate_range: tuple[float, float] = (0.99, 1.01),
        initial_mean_squared: float = 0.1,
        initial_mean_weight: float = 0.1,
        initial_weight: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_coefficients) < 1:
            raise InputError(f"num_coefficients must be positive, got {num_coefficients}")
        if not 0.0 <= float(theta) <= 1.0:
            raise InputError(f"theta must lie in [0, 1], got {theta}")
        for name, (low, high) in (("weight_range", weight_range), ("rate_range", rate_range)):
            if not 0.0 < float(low) <= float(high):
                raise InputError(f"{name} must satisfy 0 < min <= max, got {(low, high)}")
        self.num_coefficients = int(num_coefficients)
        self.theta = float(theta)
        self.weight_range = (float(weight_range[0]), float(weight_range[1]))
        self.rate_range = (float(rate_range[0]), float(rate_range[1]))
        self.initial_mean_squared = float(initial_mean_squared)
        self.initial_mean_weight = float(initial_mean_weight)
        self.initial_weight = float(initial_weight)
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return

        def state(name, value):
            return self.add_weight(
                shape=(self.num_coefficients,),
                initializer=keras.initializers.Constant(value),
                dtype="float32",
                trainable=False,
                aggregation="mean",
                name=name,
            )

        self.omega = state("omega", self.initial_weight)
        self.mean_squared = state("mean_squared", self.initial_mean_squared)
        self.mean_omega = state("mean_omega", self.initial_mean_weight)
        self.iterations = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, aggregation="only_first_replica",
            name="iterations",
        )
        self.built = True

    def weights_for_solve(self) -> tf.Tensor:
        """Current weights :math:`\\omega_i` (K,) float32: the :math:`\\alpha_i^2` of eq. 35."""
        return tf.convert_to_tensor(self.omega.value)

    def loss_weights(self) -> tf.Tensor:
        """Current weights :math:`\\omega_i` (K,) float32 of E_stat (the same as for the solve)."""
        return self.weights_for_solve()

    def update(self, coefficients: tf.Tensor) -> tf.Tensor:
        """Apply eq. 18 once with this iteration's fitted ``coefficients``.

        Args:
            coefficients: ``(..., K)`` float. Fitted coefficients; all leading dimensions are
                averaged over (minibatch).

        Returns:
            omega: ``(K,)`` float32. The new weights, for the next iteration.
        """
        coefficients = tf.convert_to_tensor(coefficients)
        if coefficients.shape.rank is None or coefficients.shape.rank < 1 or coefficients.shape[-1] != self.num_coefficients:
            raise InputError(
                f"{self.name} expects coefficients of shape (..., {self.num_coefficients}), got {coefficients.shape}"
            )
        squared = tf.reshape(tf.square(tf.cast(coefficients, tf.float32)), [-1, self.num_coefficients])
        squared = tf.reduce_mean(squared, axis=0)
        finite = tf.math.is_finite(squared)
        theta = self.theta
        mean_squared = (1.0 - theta) * tf.where(finite, squared, 0.0) + theta * self.mean_squared.value
        rate = tf.clip_by_value(mean_squared, *self.rate_range)
        mean_omega = (1.0 - theta) * self.omega.value + theta * self.mean_omega.value
        omega = tf.clip_by_value(rate * mean_omega, *self.weight_range)
        self.mean_squared.assign(tf.where(finite, mean_squared, self.mean_squared.value))
        self.mean_omega.assign(tf.where(finite, mean_omega, self.mean_omega.value))
        self.omega.assign(tf.where(finite, omega, self.omega.value))
        self.iterations.assign_add(1)
        return tf.convert_to_tensor(self.omega.value)

    def call(self, coefficients, training=None):
        coefficients = tf.convert_to_tensor(coefficients)
        in_force = tf.broadcast_to(self.weights_for_solve(), tf.shape(coefficients))
        if training:
            self.update(coefficients)
        return in_force

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_coefficients": self.num_coefficients,
            "theta": self.theta,
            "weight_range": list(self.weight_range),
            "rate_range": list(self.rate_range),
            "initial_mean_squared": self.initial_mean_squared,
            "initial_mean_weight": self.initial_mean_weight,
            "initial_weight": self.initial_weight,
        }
