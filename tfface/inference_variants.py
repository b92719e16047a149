"""Inference variants of the geometric solve (issue 3's ``geometric_variants``) as drop-in layers.

The full model's pipeline (:meth:`tfface.model.FaceModel.fit_images`) calls its geometric layer
with the sampled pixels, depths, confidences and UV-3DMM samples. These layers take its place in
a model configured by :func:`tfface.export.configure_for_inference`:

* :class:`KnownIntrinsicsGeometry`: the camera intrinsics ``K`` are known (model-input pixels);
  only pose, depth scale and shape are solved. The returned inverse camera is
  ``P_hat = R^T K^-1 / psi``, so the model's camera decomposition gives back the known ``K``.
* :class:`SharedIdentityGeometry`: the images of a batch show one person; one identity vector is
  solved jointly with per-image cameras and expressions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from tfface.layers.geometric import GeometricLeastSquares, check_geometric_inputs
from tfface.layers.geometric_variants import solve_geometry_known_intrinsics, solve_geometry_shared_identity

if TYPE_CHECKING:
    import numpy as np


@keras.saving.register_keras_serializable(package="tfface")
class KnownIntrinsicsGeometry(GeometricLeastSquares):
    """Geometric least squares with known intrinsics; same call and outputs as the base layer.

    The intrinsics live in :attr:`intrinsics`, a ``(B, 3, 3)`` variable of any batch size that
    the caller assigns before each call (:meth:`set_intrinsics`), so one traced function serves
    images of different sizes.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.intrinsics = tf.Variable(tf.eye(3, batch_shape=[1]), shape=tf.TensorShape([None, 3, 3]),
                                      trainable=False, name="known_intrinsics")

    def set_intrinsics(self, intrinsics: np.ndarray | tf.Tensor) -> None:
        """Assign ``(B, 3, 3)`` intrinsics (model-input pixels) for the next call."""
        self.intrinsics.assign(tf.convert_to_tensor(intrinsics, tf.float32))

    def call(self, pixels, depth, weights, mean, basis, coefficient_weights, translation_prior: bool = True):
        return self.solve_checked(
            check_geometric_inputs,
            solve_geometry_known_intrinsics,
            (pixels, depth, weights, mean, basis, coefficient_weights),
            intrinsics=self.intrinsics.value(),
            **self.prior_options(translation_prior),
        )


@keras.saving.register_keras_serializable(package="tfface")
class SharedIdentityGeometry(GeometricLeastSquares):
    """Geometric least squares for a batch of images of one person: a shared identity.

    Same call and outputs as the base layer; ``coefficients`` (B, K) repeat the shared identity.

    Args:
        num_identity: Leading identity columns of the basis (the rest are expression).
    """

    def __init__(self, num_identity: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_identity = int(num_identity)

    def _joint(self, pixels, depth, weights, mean, basis, coefficient_weights, **options):
        """The batch as the ``V = B`` views of one person; outputs back to per-image shapes."""
        views = [tensor[None] for tensor in (pixels, depth, weights, mean, basis)]
        outputs = solve_geometry_shared_identity(*views, coefficient_weights, self.num_identity, **options)
        return {name: outputs[name][0] for name in ("p_hat", "q_hat", "coefficients", "residual", "well_posed")}

    def call(self, pixels, depth, weights, mean, basis, coefficient_weights, translation_prior: bool = True):
        return self.solve_checked(
            check_geometric_inputs,
            self._joint,
            (pixels, depth, weights, mean, basis, coefficient_weights),
            **self.prior_options(translation_prior),
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "num_identity": self.num_identity}
