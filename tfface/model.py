"""The full model: image -> U-Net -> sampling -> geometric and photometric solves -> losses.

:class:`FaceModel` is a ``keras.Model`` whose ``train_step`` implements the unsupervised training
of DESIGN "Training", so training is plain ``model.fit(images)`` on a ``tf.data`` dataset of
image batches (anything else in the batch, e.g. ground truth, is ignored). Per image:

1. softplus preprocessing (supplement E), then the U-Net predicts u, v, depth and the
   geometric and photometric confidence at every pixel;
2. ``num_samples`` pixels are drawn by the product of the two confidences (supplement C): a
   pixel belongs to the face where its geometry is consistent AND the colour model explains it.
   The geometric solve weighs samples by the same product. (Sampling by the geometric confidence
   alone lets the face region spread over the background: self-consistent geometry is possible
   anywhere, only the photometric evidence ties the face to the image.)
3. the UV-3DMM is sampled at the predicted (u, v) of those pixels;
4. the geometric solve (eq. 37) fits the inverse camera and shape+expression coefficients;
5. vertex normals of the fitted shape are interpolated at the samples; the photometric solve
   (eq. 41) fits 27 inverse-SH lighting and the albedo coefficients;
6. loss: the truncated confidence-weighted residual losses of both solves, E_stat with the
   adaptive weights of supplement G (which also regularise the geometric solve), and the
   early camera-translation regulariser inside the geometric solve (its weight is scheduled
   by :class:`tfface.training.callbacks.TranslationSchedule`).

A step whose loss or gradient is not finite changes nothing and is counted (``skipped_steps``,
:meth:`FaceModel.train_step`); :class:`tfface.training.callbacks.StopOnNonFiniteSteps` ends a run
of them.

:meth:`FaceModel.infer` is the inference path: a pure function of an image batch returning
correspondence, depth, confidence, camera, coefficients, fitted vertices, landmarks and whether
each image's fit is valid (``fit_valid``, ``fit_status``: :func:`fit_validity`). It
fits a fixed lattice of pixels (every pixel by default) instead of random samples, weighted so
that the fit estimates the training fit with less sampling noise, with the shape and expression
prior ``inference_prior_scale`` times heavier, without the early camera-translation regulariser
(a training device: it holds the camera centre in front of the face, so it would hold every
fitted view near frontal), and re-solves the geometry ``robust_refits`` times without the samples
the truncated loss gives up on (residual above ``tau_geometric``). With
``inference_flip_test`` it fits the maps of the image fused with those of its mirror image
(:meth:`FaceModel.inference_maps`, :mod:`tfface.flip_test`); with ``inference_fallback_focal``
it fits them again under a fixed natural camera where the free camera is implausible
(:meth:`FaceModel.fit_with_fallback`); with ``inference_upright_pass`` it fits each face again
in its image turned upright by the first fit's roll (:meth:`FaceModel.inference_fit`,
:mod:`tfface.upright_pass`).

Lighting is fitted against model-space normals: second-order SH span a rotation-invariant space,
so the fit (and its residual) is the same as with camera-space normals; only the coefficients
are expressed in the model frame.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from tfface import losses
from tfface.data.augment import augment_batch
from tfface.errors import InputError
from tfface.flip_test import fuse_maps, mirror_maps
from tfface.geometry.camera import adjugate, camera_is_plausible, centred_intrinsics
from tfface.layers.adaptive_regularization import AdaptiveRegularizer
from tfface.layers.geometric import GeometricLeastSquares, InverseCameraDecomposition, check_geometric_inputs
from tfface.layers.geometric_variants import solve_geometry_known_intrinsics
from tfface.layers.graph_loops import iterate
from tfface.layers.photometric import PhotometricLeastSquares, sample_normals, sample_normals_compiled
from tfface.layers.pixel_sampling import LatticePixelSampler, PixelSampler, gather_pixels, pixel_centres
from tfface.layers.preprocessing import SoftplusPreprocessing
from tfface.layers.uv_sampling import UVSampling
from tfface.layers.vignette import apply_vignette, vignette_mask
from tfface.morphable.model import LANDMARK5_GROUPS
from tfface.morphable.symmetry import mirror_partners
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.nets.unet import build_unet
from tfface.training.config import TrainConfig
from tfface.upright_pass import camera_roll, maps_turned_back, turn_about_centre

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: Names of the scalar losses the train/test steps report.
LOSS_NAMES = ("loss", "geometric", "photometric", "statistical", "confidence", "inliers")

#: ``fit_status`` codes of :func:`fit_validity`: a valid fit; an ill-posed one (too little confident
#: data, :data:`MIN_FIT_WEIGHT`, or a non-finite or singular solve: its camera is no camera, often
#: the placeholder ``K = R = I``); a well-posed fit whose camera no real photograph could have
#: (:func:`~tfface.geometry.camera.camera_is_plausible`) or that places the face outside the image
#: (:data:`FACE_IN_VIEW_MARGIN_WIDTHS`).
FIT_OK, FIT_ILL_POSED, FIT_IMPLAUSIBLE_CAMERA = 0, 1, 2

#: Names of the ``fit_status`` codes, by code.
FIT_STATUS_NAMES = ("ok", "ill_posed_fit", "implausible_camera")

#: Least total weight of a fit's samples (joint confidence times validity, summed; a fully
#: confident sample weighs 1) for the fit to count as well posed: with less, the priors and not the
#: image decide the camera (a network's confidence is never exactly 0, so "any weight" would let a
#: blank image's fit pass as informed). The 12 camera unknowns need at least four 3D
#: correspondences; ten samples leave a margin.
MIN_FIT_WEIGHT = 10.0

#: How far outside the image (in image widths, on every side) any of a valid fit's 68 landmarks
#: may lie: a fit that places its face further out describes no face in this image, whatever
#: its camera; nor does one whose landmarks are strewn over many image widths while their centroid
#: stays inside (a network that sees no face: a grey AFLW2000-3D photo, image02748, had a "valid"
#: fit spread over 175 crop widths). A face cut by the image border keeps its landmarks inside this.
FACE_IN_VIEW_MARGIN_WIDTHS = 0.5


def truncate_uv_model(uv_model: UVMorphableModel, config: TrainConfig) -> UVMorphableModel:
    """The UV-3DMM with only the leading modes the configuration fits."""
    model = uv_model.model.truncated(config.num_shape, config.num_expression, config.num_albedo)
    return dataclasses.replace(uv_model, model=model)


def project_points(points: tf.Tensor, p_hat: tf.Tensor, q_hat: tf.Tensor) -> tf.Tensor:
    """Pixels of model points under an inverse camera: ``d x = P_hat^-1 (X - q_hat)``.

    ``P_hat^-1`` is applied as the adjugate of ``P_hat`` (``det(P_hat) P_hat^-1``) scaled to a
    largest entry of 1: any non-zero factor cancels in the perspective division, and nothing is
    inverted, so a singular ``P_hat`` (an ill-posed fit, flagged by ``fit_valid``) gives finite
    pixels instead of an error.

    Args:
        points: ``(B, N, 3)`` model points (mm).
        p_hat: ``(B, 3, 3)``; q_hat: ``(B, 3)``.

    Returns:
        ``(B, N, 2)`` pixel coordinates.
    """
    inverse = adjugate(p_hat)
    largest = tf.reduce_max(tf.abs(inverse), axis=[-2, -1], keepdims=True)
    inverse = inverse / tf.maximum(largest, 1e-30)
    homogeneous = tf.einsum("bij,bnj->bni", inverse, points - q_hat[:, None, :])
    z = homogeneous[..., 2]
    z = tf.where(tf.abs(z) > 1e-12, z, tf.fill(tf.shape(z), 1e-12))
    return homogeneous[..., :2] / z[..., None]


def face_in_view(landmarks68: tf.Tensor, image_width: int | tf.Tensor) -> tf.Tensor:
    """Whether each fit's face lies in its image: every landmark within the square image widened
    by :data:`FACE_IN_VIEW_MARGIN_WIDTHS` on every side (a non-finite landmark is not).

    Args:
        landmarks68: ``(B, 68, 2)`` the fit's landmarks (pixels).
        image_width: width (pixels) of the square image they refer to.

    Returns:
        ``(B,)`` bool.
    """
    points = tf.cast(landmarks68, tf.float32) / tf.cast(image_width, tf.float32)
    inside = tf.logical_and(points >= -FACE_IN_VIEW_MARGIN_WIDTHS, points <= 1.0 + FACE_IN_VIEW_MARGIN_WIDTHS)
    return tf.reduce_all(inside, axis=[-2, -1])


def fit_validity(well_posed: tf.Tensor, K: tf.Tensor, R: tf.Tensor, t: tf.Tensor, landmarks68: tf.Tensor,
                 image_width: int | tf.Tensor) -> dict[str, tf.Tensor]:
    """Whether each fit is valid: well posed, with a plausible camera that sees the face.

    Args:
        well_posed: ``(B,)`` non-zero where the solves were well posed and the inverse camera
            decomposed.
        K, R, t: ``(B, 3, 3)``, ``(B, 3, 3)``, ``(B, 3)`` the decomposed camera (pixels, mm).
        landmarks68: ``(B, 68, 2)`` the fit's landmarks (pixels): each must lie within the square
            image widened by :data:`FACE_IN_VIEW_MARGIN_WIDTHS` (:func:`face_in_view`).
        image_width: width (pixels) of the square image ``K`` and the landmarks refer to.

    Returns:
        dict with ``fit_status`` ``(B,)`` float32, one of :data:`FIT_OK`, :data:`FIT_ILL_POSED`
        and :data:`FIT_IMPLAUSIBLE_CAMERA` (in this order of precedence), and ``fit_valid``
        ``(B,)`` float32, 1 where the status is :data:`FIT_OK`, else 0.
    """
    plausible = tf.logical_and(camera_is_plausible(K, R, t, image_width), face_in_view(landmarks68, image_width))
    status = tf.where(tf.convert_to_tensor(well_posed) > 0,
                      tf.where(plausible, float(FIT_OK), float(FIT_IMPLAUSIBLE_CAMERA)), float(FIT_ILL_POSED))
    return {"fit_status": status, "fit_valid": tf.cast(tf.equal(status, float(FIT_OK)), tf.float32)}


def face_confidence(maps: tf.Tensor) -> tf.Tensor:
    """Joint confidence ``(...,)`` of maps or samples ``(..., 5)``: geometric x photometric.

    A pixel belongs to the face where its geometry is consistent and the colour model explains
    it; this product selects the fitted pixels, weighs the geometric solve and gives the exported
    ``face_score``.
    """
    return maps[..., 3] * maps[..., 4]


def direct_landmarks(maps: tf.Tensor, landmark_uv: tf.Tensor, sigma: float = 0.01) -> tf.Tensor:
    """Landmarks read directly from the correspondence map (supplement J, "Direct").

    Each landmark is the soft-argmin over pixels of the UV distance between the predicted
    correspondence and the landmark's UV, weighted by the geometric confidence:
    ``softmax_p(-|uv_p - uv_l|^2 / (2 sigma^2) + log conf_p)`` averages the pixel centres.

    Args:
        maps: ``(B, H, W, 5)`` network output.
        landmark_uv: ``(L, 2)`` UV coordinates of the landmark vertices.
        sigma: UV-space width of the soft-argmin.

    Returns:
        ``(B, L, 2)`` pixel coordinates.
    """
    shape = tf.shape(maps)
    batch, height, width = shape[0], shape[1], shape[2]
    uv = tf.reshape(maps[..., 0:2], [batch, -1, 2])
    confidence = tf.reshape(maps[..., 3], [batch, -1])
    distance2 = tf.reduce_sum(tf.square(uv[:, :, None, :] - landmark_uv[None, None]), axis=-1)  # (B, HW, L)
    logits = -distance2 / (2.0 * sigma ** 2) + tf.math.log(confidence + 1e-6)[..., None]
    weights = tf.nn.softmax(logits, axis=1)
    centres = pixel_centres(tf.range(height * width)[None], width)[0]  # (HW, 2)
    return tf.einsum("bpl,pc->blc", weights, centres)


def failed_fits_zeroed(outputs: dict[str, tf.Tensor], fit_valid: tf.Tensor) -> dict[str, tf.Tensor]:
    """``outputs`` (each ``(B, ...)``) with every non-finite entry of an image whose fit failed
    (``fit_valid`` ``(B,)`` 0) set to 0, so that inference returns finite values only.

    A valid fit has only finite outputs; a failed one (e.g. a singular system whose Cholesky
    factor is NaN in graph mode) may not, and its camera, mesh and landmarks are no face
    whatever their values: ``fit_valid`` says so.
    """
    def zeroed(value):
        failed = tf.reshape(fit_valid <= 0, [-1] + [1] * (value.shape.rank - 1))
        return tf.where(tf.logical_and(failed, tf.logical_not(tf.math.is_finite(value))), tf.zeros_like(value), value)

    return {name: zeroed(value) for name, value in outputs.items()}


def per_image_choice(use: tf.Tensor, chosen: dict[str, tf.Tensor], otherwise: dict[str, tf.Tensor]
                     ) -> dict[str, tf.Tensor]:
    """Per image, ``chosen``'s value where ``use`` ``(B,)`` bool, else ``otherwise``'s (every key
    of ``otherwise``; values ``(B, ...)``)."""
    return {name: tf.where(tf.reshape(use, [-1] + [1] * (value.shape.rank - 1)), chosen[name], value)
            for name, value in otherwise.items()}


def all_finite(tensors: Iterable[tf.Tensor | None]) -> tf.Tensor:
    """Scalar bool: every element of every tensor in ``tensors`` (None entries skipped) is
    finite, on every replica of the current ``tf.distribute`` replica context."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None])
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return finite
    failures = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    return tf.equal(failures, 0.0)


def apply_gradients_if(optimizer: keras.optimizers.Optimizer, condition: tf.Tensor,
                       gradients: Sequence[tf.Tensor | None], variables: Sequence[keras.Variable]) -> None:
    """``optimizer.apply_gradients`` where scalar ``condition`` (the same on every replica) holds;
    otherwise nothing changes: no weight, no optimizer slot, no iteration count.

    Under a strategy that all-reduces gradients through ``merge_call`` (``MirroredStrategy``),
    the choice is made in cross-replica context, as Keras' ``LossScaleOptimizer`` does: a
    ``tf.cond`` in replica context cannot hold a ``merge_call``.
    """
    def apply(grads):
        optimizer.apply_gradients(zip(grads, variables))

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(condition, lambda: apply(gradients), lambda: None)
        return

    def cross_replica(distribution, condition, grads):
        agreed = distribution.experimental_local_results(condition)[0]
        tf.cond(agreed, lambda: distribution.extended.call_for_each_replica(apply, args=(grads,)), lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(condition, gradients))


@keras.saving.register_keras_serializable(package="tfface")
class SkippedSteps(keras.metrics.Metric):
    """Training steps skipped for a non-finite loss or gradient: ``skipped_steps`` in all and
    ``consecutive_skipped_steps`` up to the latest step.

    :class:`FaceModel` keeps it out of its ``metrics``, so Keras does not reset it at every
    epoch: the counts run over the life of the model object (one process of a run).
    """

    def __init__(self, name: str = "skipped_steps", **kwargs):
        super().__init__(name=name, **kwargs)
        # Every replica counts the same (all-reduced) decision: keep the first replica's count.
        self.total = self.add_variable((), "zeros", "float32", aggregation="only_first_replica", name="total")
        self.consecutive = self.add_variable((), "zeros", "float32", aggregation="only_first_replica",
                                             name="consecutive")

    def update_state(self, skipped: tf.Tensor) -> None:
        """Count one step, ``skipped`` (scalar bool) or not."""
        skipped = tf.cast(skipped, tf.float32)
        self.total.assign_add(skipped)
        self.consecutive.assign((self.consecutive + 1.0) * skipped)

    def result(self) -> dict[str, tf.Tensor]:
        return {"skipped_steps": tf.identity(self.total), "consecutive_skipped_steps": tf.identity(self.consecutive)}

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.consecutive.assign(0.0)


def landmarks5_from_68_tf(points68: tf.Tensor) -> tf.Tensor:
    """Tensor version of :func:`tfface.morphable.model.landmarks5_from_68`: ``(B, 68, D) -> (B, 5, D)``."""
    return tf.stack([tf.reduce_mean(tf.gather(points68, list(g), axis=1), axis=1) for g in LANDMARK5_GROUPS],
                    axis=1)


@keras.saving.register_keras_serializable(package="tfface")
class FaceModel(keras.Model):
    """U-Net plus in-network least-squares 3DMM fit, trained without supervision.

    Args:
        uv_model: the UV-3DMM (object or path of a file written by ``UVMorphableModel.save``);
            it is truncated to the modes of ``config``.
        config: a :class:`TrainConfig` or its dict.

    Inputs are ``(B, H, W, 3)`` float32 RGB images in [0, 1] with ``H = W = config.image_size``.
    """

    def __init__(self, uv_model: UVMorphableModel | str | Path, config: TrainConfig | dict, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, TrainConfig) else TrainConfig(**config)
        self.uv_model_path = None if isinstance(uv_model, UVMorphableModel) else str(uv_model)
        full = uv_model if isinstance(uv_model, UVMorphableModel) else UVMorphableModel.load(uv_model)
        self.uv_model = truncate_uv_model(full, self.config)
        self.uv_sampling = UVSampling.from_uv_model(self.uv_model, persist_tables=False, name="uv_sampling")
        cfg, m = self.config, self.uv_model.model
        self.num_coefficients = m.num_shape + m.num_expression
        self.num_vertices = m.num_vertices
        self.preprocessing = SoftplusPreprocessing(name="preprocessing")
        self._vignette = tf.constant(vignette_mask(cfg.image_size, cfg.input_vignette)) if cfg.input_vignette > 0 else None
        self.unet = build_unet(cfg.image_size, cfg.variant, cfg.width, depth_offset=cfg.depth_offset,
                               dtype="mixed_bfloat16" if cfg.uses_mixed_precision() else None,
                               synchronized_batchnorm=cfg.synchronized_batchnorm)
        self.sampler = PixelSampler(cfg.num_samples, cfg.sample_threshold, seed=cfg.seed, name="sampler")
        self.inference_sampler = LatticePixelSampler(cfg.inference_samples or cfg.image_size ** 2, cfg.num_samples,
                                                     cfg.sample_threshold, name="inference_sampler")
        if cfg.robust_refits < 0 or not cfg.inference_prior_scale > 0:
            raise InputError("robust_refits must be >= 0 and inference_prior_scale > 0, got "
                             f"{cfg.robust_refits} and {cfg.inference_prior_scale}")
        self.geometric = GeometricLeastSquares(z0=cfg.z0, translation_weight=cfg.translation_weight,
                                               ridge=cfg.ridge, name="geometric")
        # Focal length (image widths) of the inference fit's fixed-camera fallback (None: none).
        self.fallback_focal = cfg.inference_fallback_focal
        self.photometric = PhotometricLeastSquares(lighting_weight=cfg.lighting_weight, ridge=cfg.ridge,
                                                   name="photometric")
        self._albedo_weights = tf.fill([m.num_albedo], float(cfg.albedo_weight))
        # Not strict: a degenerate camera is flagged (fit_validity), not raised, even eagerly.
        self.decomposition = InverseCameraDecomposition(strict=False, name="camera")
        self.regularizer = AdaptiveRegularizer(self.num_coefficients, initial_weight=cfg.coefficient_prior,
                                               initial_mean_weight=cfg.coefficient_prior,
                                               name="adaptive_regularizer")
        # Tables of the fitted mesh (normals, landmarks); its vertices come from the sampler's tables.
        self._triangles = tf.constant(m.triangles)
        self._landmarks68 = tf.constant(m.landmarks68)
        self._landmark_uv = tf.constant(self.uv_model.vertex_uv[m.landmarks68])
        # UV of every vertex's mirror partner, for the flip test (None without it).
        self._mirror_uv = (tf.constant(self.uv_model.vertex_uv[mirror_partners(m.mean)])
                           if cfg.inference_flip_test else None)
        names = LOSS_NAMES + (("anchor",) if cfg.pose_anchor_weight > 0 else ()) \
            + (("equivariance",) if cfg.equivariance_weight > 0 else ())
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.skipped_steps = SkippedSteps()

    # ------------------------------------------------------------------ pipeline
    @property
    def use_xla(self) -> bool:
        """Whether the UV-3DMM sampling and the normals of the fit run compiled with XLA (the
        default, faster in training); :func:`tfface.export.configure_for_inference` turns it off,
        since exported graphs must not hold XLA clusters."""
        return self.uv_sampling.jit_compile

    @use_xla.setter
    def use_xla(self, value: bool) -> None:
        self.uv_sampling.jit_compile = bool(value)

    def fitted_vertices(self, coefficients: tf.Tensor) -> tf.Tensor:
        """``(B, V, 3)`` vertices of the fitted shape+expression (mm)."""
        return self.uv_sampling.vertex_values(coefficients)

    def predict_maps(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """U-Net prediction ``(B, H, W, 5)`` (u, v, depth, geometric and photometric confidence).

        Raises:
            InputError: images that are not ``(B, S, S, 3)`` float with ``S = config.image_size``
                (grey, RGBA, other sizes, integer dtypes) or, eagerly, contain NaN/inf.
        """
        preprocessed = self.preprocessing(images)  # checks rank, channels, dtype and finiteness
        size = self.config.image_size
        if tuple(preprocessed.shape[1:3]) != (size, size):
            raise InputError(f"images must be {size}x{size} for this model, got {tuple(preprocessed.shape[1:3])}")
        if self._vignette is not None:
            preprocessed = apply_vignette(preprocessed, self._vignette)
        return self.unet(preprocessed, training=training)

    def inference_maps(self, images: tf.Tensor) -> tf.Tensor:
        """The maps ``(B, H, W, 5)`` the inference fit uses: :meth:`predict_maps`, fused with those
        of the mirror image where ``config.inference_flip_test`` (:mod:`tfface.flip_test`; one
        U-Net call on both)."""
        if self._mirror_uv is None:
            return self.predict_maps(images)
        images = tf.convert_to_tensor(images)
        both = self.predict_maps(tf.concat([images, tf.reverse(images, axis=[2])], axis=0))
        maps, maps_of_mirror = tf.split(both, 2, axis=0)
        mirrored = mirror_maps(maps_of_mirror, lambda uv: self.uv_sampling.interpolate(uv, self._mirror_uv))
        return fuse_maps(maps, mirrored)

    def fit_images(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Run the whole pipeline on a batch of images; see :meth:`fit_maps` for the result."""
        return self.fit_maps(images, self.predict_maps(images, training=training))

    def fit_maps(self, images: tf.Tensor, maps: tf.Tensor, inference: bool = False,
                 intrinsics: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Sample pixels of predicted ``maps`` and fit the 3DMM to them (steps 2-5 above).

        Args:
            images: ``(B, H, W, 3)`` RGB in [0, 1].
            maps: ``(B, H, W, 5)`` u, v, depth, geometric and photometric confidence.
            inference: fit as :meth:`infer` does (weighted lattice, heavier prior, robust
                re-solves, no camera-translation regulariser) instead of as in training (random
                samples).
            intrinsics: ``(B, 3, 3)`` known intrinsics (pixels): the geometric solve then finds
                only the pose, depth scale and shape under them
                (:func:`~tfface.layers.geometric_variants.solve_geometry_known_intrinsics`)
                instead of the free inverse camera.

        Returns:
            dict with ``maps``, ``indices`` (B, P), ``pixels`` (B, P, 2), ``valid`` (B, P),
            ``geometric_confidence``/``photometric_confidence`` (B, P), the geometric outputs
            (``p_hat``, ``q_hat``, ``coefficients``, ``geometric_residual`` (B, P, 3) mm), the
            camera (``K``, ``R``, ``t``, ``psi``), the photometric outputs (``lighting``,
            ``albedo_coefficients``, ``reconstruction`` and ``photometric_residual`` (B, P, 3)),
            ``vertices`` (B, V, 3), the samples' ``colours`` (B, P, 3) as the photometric solve
            saw them (softplus-preprocessed), fitted camera-space ``normals`` (B, P, 3) and UV-3DMM
            triangle ``vertex_ids`` and ``barycentrics`` (B, P, 3)
            (:class:`~tfface.morphable.sampling.UVSample`), and
            ``well_posed`` (B,): 1 where the samples weigh at least
            :data:`MIN_FIT_WEIGHT`, both solves were well posed and the inverse camera
            decomposed, else 0 (the camera may then be a placeholder).
        """
        preprocessed = self.preprocessing(tf.convert_to_tensor(images, tf.float32))
        width = tf.shape(maps)[2]
        confidence = face_confidence(maps)
        if inference:
            indices = self.inference_sampler(confidence)
            sample_weights = self.inference_sampler.sample_weights(confidence, indices)
        else:
            indices = self.sampler(confidence)
            sample_weights = 1.0
        samples = gather_pixels(maps, indices)  # (B, P, 5)
        colours = gather_pixels(preprocessed, indices)  # (B, P, 3)
        pixels = pixel_centres(indices, width)
        uv_sample = self.uv_sampling(samples[..., 0:2])
        valid = uv_sample.valid
        weights = valid * sample_weights

        prior = self.regularizer.weights_for_solve() * (self.config.inference_prior_scale if inference else 1.0)

        def solve(geometric_weights):
            tensors = (pixels, samples[..., 2], geometric_weights, uv_sample.mean, uv_sample.basis, prior)
            if intrinsics is None:
                return self.geometric(*tensors, translation_prior=not inference)
            return self.geometric.solve_checked(check_geometric_inputs, solve_geometry_known_intrinsics, tensors,
                                                intrinsics=intrinsics,
                                                **self.geometric.prior_options(translation_prior=not inference))

        def robust_refit(geometric: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return solve(self.inlier_weights(geometric_weights, geometric["residual"]))

        geometric_weights = face_confidence(samples) * weights
        geometric = iterate(robust_refit, solve(geometric_weights), self.config.robust_refits if inference else 0)
        vertices = self.fitted_vertices(geometric["coefficients"])
        camera = self.decomposition(geometric["p_hat"], geometric["q_hat"])
        normals = (sample_normals_compiled if self.use_xla else sample_normals)(
            vertices, self._triangles, uv_sample.vertex_ids, uv_sample.barycentrics, camera["R"])
        photometric = self.photometric(colours, normals, samples[..., 4] * weights, uv_sample.albedo_mean,
                                       uv_sample.albedo_basis, self._albedo_weights)
        return {
            "maps": maps, "indices": indices, "pixels": pixels, "valid": valid,
            "geometric_confidence": samples[..., 3], "photometric_confidence": samples[..., 4],
            "p_hat": geometric["p_hat"], "q_hat": geometric["q_hat"],
            "coefficients": geometric["coefficients"], "geometric_residual": geometric["residual"],
            "K": camera["K"], "R": camera["R"], "t": camera["t"], "psi": camera["psi"],
            "lighting": photometric["lighting"], "albedo_coefficients": photometric["coefficients"],
            "reconstruction": photometric["colour"],
            "photometric_residual": photometric["residual"], "vertices": vertices,
            "colours": colours, "normals": normals,
            "vertex_ids": uv_sample.vertex_ids, "barycentrics": uv_sample.barycentrics,
            "well_posed": (tf.cast(tf.reduce_sum(geometric_weights, -1) >= MIN_FIT_WEIGHT, tf.float32)
                           * geometric["well_posed"] * camera["valid"] * photometric["well_posed"]),
        }

    def inlier_weights(self, weights: tf.Tensor, residual: tf.Tensor) -> tf.Tensor:
        """``weights (B, P)`` without the samples whose geometric ``residual (B, P, 3)`` (mm)
        exceeds ``tau_geometric``, image by image; an image that would keep less than half its
        weight that way keeps all of it (a fit that poor is no basis for choosing outliers)."""
        inliers = tf.cast(tf.reduce_sum(tf.square(residual), -1) < self.config.tau_geometric ** 2, weights.dtype)
        kept = tf.reduce_sum(weights * inliers, -1, keepdims=True)
        return tf.where(kept >= 0.5 * tf.reduce_sum(weights, -1, keepdims=True), weights * inliers, weights)

    def losses_of(self, fit: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Per-image loss terms ``(B,)`` of a :meth:`fit_images` result (DESIGN "Training")."""
        cfg = self.config
        geometric = losses.truncated_confidence_loss(fit["geometric_residual"], fit["geometric_confidence"],
                                                     cfg.tau_geometric, fit["valid"], soft=cfg.soft_geometric_loss)
        photometric_confidence = fit["photometric_confidence"]
        if cfg.joint_photometric_confidence:  # a pixel explains colour only where it explains geometry
            photometric_confidence = photometric_confidence * fit["geometric_confidence"]
        photometric = losses.truncated_confidence_loss(fit["photometric_residual"], photometric_confidence,
                                                       cfg.tau_photometric, fit["valid"])
        statistical = losses.statistical_loss(fit["coefficients"], self.regularizer.loss_weights())
        total = (geometric / cfg.tau_geometric ** 2 + cfg.photometric_weight * photometric / cfg.tau_photometric ** 2
                 + cfg.stat_weight * statistical / (cfg.num_samples * cfg.tau_geometric ** 2))
        inliers = tf.reduce_mean(fit["valid"] * tf.cast(
            tf.reduce_sum(tf.square(fit["geometric_residual"]), -1) < cfg.tau_geometric ** 2, tf.float32), -1)
        return {"loss": total, "geometric": geometric, "photometric": photometric, "statistical": statistical,
                "confidence": tf.reduce_mean(fit["geometric_confidence"], -1), "inliers": inliers}

    # ------------------------------------------------------------------ keras API
    def build(self, input_shape=None):
        """Nothing to create: the U-Net and every layer made their variables when constructed."""
        self.built = True

    def build_for_training(self) -> None:
        """Create every variable (U-Net, optimizer) so weights can be restored before ``fit``."""
        size = self.config.image_size
        self(tf.zeros([1, size, size, 3]))
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, images, training=False):
        return self.predict_maps(images, training=training)

    @staticmethod
    def _images_of(data):
        if isinstance(data, dict):
            return data["image"]
        if isinstance(data, (tuple, list)):
            return data[0]
        return data

    def _update_trackers(self, terms, batch_size, finite=True, extra=None):
        """Add the batch's mean ``terms`` (unless not ``finite``: a skipped step) to their trackers;
        the results, plus ``extra`` results, as the step's logs."""
        weight = tf.cast(batch_size, tf.float32) * tf.cast(finite, tf.float32)
        for name, tracker in self.trackers.items():
            if name not in terms:  # e.g. the anchor, absent from evaluation
                continue
            tracker.update_state(tf.where(finite, tf.reduce_mean(terms[name]), 0.0), sample_weight=weight)
        results = {**{name: tracker.result() for name, tracker in self.trackers.items()}, **(extra or {})}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces multi-worker step outputs with strategy.reduce(..., axis=0): give them an axis.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def train_step(self, data):
        """One optimizer step on a batch; a step whose loss or gradient is not finite (on any
        replica) is skipped: weights, optimizer state, batch-norm statistics and adaptive
        regularisation stay as they were, the loss trackers ignore it and ``skipped_steps`` /
        ``consecutive_skipped_steps`` (:class:`SkippedSteps`) count it in the logs
        (:class:`tfface.training.callbacks.StopOnNonFiniteSteps` ends a run of them).

        A dict batch may carry ``anchor``: pretraining images ``(B, H, W, 3)`` and their target
        maps ``(B, H, W, 4)``, whose supervised loss (:func:`tfface.losses.pretraining_loss`,
        logged as ``anchor``) is added with weight ``pose_anchor_weight``. With
        ``equivariance_weight`` > 0, the batch is also warped by random similarities
        (:meth:`equivariance_terms`) and their equivariance loss is added with that weight."""
        images = self._images_of(data)
        anchor = data.get("anchor") if isinstance(data, dict) and self.config.pose_anchor_weight > 0 else None
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        if not self.optimizer.built:  # no variable may be created inside apply_gradients_if's branch
            self.optimizer.build(variables)
        stateful = [*self.unet.non_trainable_variables, *self.regularizer.variables]
        before = [tf.identity(variable.value) for variable in stateful]
        with tf.GradientTape() as tape:
            fit = self.fit_images(images, training=True)
            terms = self.losses_of(fit)
            loss = tf.reduce_mean(terms["loss"])
            if anchor is not None:
                terms["anchor"] = losses.pretraining_loss(self.predict_maps(anchor[0], training=True), anchor[1],
                                                          depth_weight=self.config.pretrain_depth_weight)
                loss += self.config.pose_anchor_weight * tf.reduce_mean(terms["anchor"])
            if self.config.equivariance_weight > 0:
                terms["equivariance"] = self.equivariance_terms(images, fit["maps"])
                loss += self.config.equivariance_weight * tf.reduce_mean(terms["equivariance"])
            scaled = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, variables)
        finite = all_finite([loss, *gradients])
        apply_gradients_if(self.optimizer, finite, gradients, variables)
        self.regularizer.update(self._global_rms(fit["coefficients"]))
        for variable, value in zip(stateful, before):  # undo the forward pass's updates of a skipped step
            variable.assign(tf.where(finite, variable.value, value))
        self.skipped_steps.update_state(tf.logical_not(finite))
        return self._update_trackers(terms, tf.shape(images)[0], finite, self.skipped_steps.result())

    def equivariance_terms(self, images: tf.Tensor, maps: tf.Tensor) -> tf.Tensor:
        """``(B,)`` :func:`tfface.losses.equivariance_loss` of ``images`` ``(B, H, W, 3)`` whose
        maps are ``maps`` ``(B, H, W, 5)``, under random similarities (``equivariance_*`` ranges
        of the config, drawn from the seed and the optimizer's step), the uncovered pixels of each
        warped image filled with the previous image of the batch. When ``seam_free``, the
        warped disc shows only what the unwarped disc showed (no fill, no seam)."""
        cfg = self.config
        seed = tf.stack([tf.constant(cfg.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        confine = cfg.seam_confinement(cfg.seam_radius())  # the input shows photo within the same disc
        warped = augment_batch({"image": images}, seed, cfg.equivariance_ranges(), confine=confine)
        return losses.equivariance_loss(self.predict_maps(warped["image"], training=True), maps, warped["similarity"])

    @staticmethod
    def _global_rms(coefficients):
        """``(1, K)`` root mean square of the coefficients over the global batch (all replicas),
        so that the adaptive weights evolve as in one single-replica step on that batch."""
        squared = tf.reduce_mean(tf.square(coefficients), axis=0)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            squared = context.all_reduce(tf.distribute.ReduceOp.MEAN, squared)
        return tf.sqrt(squared)[None]

    def test_step(self, data):
        images = self._images_of(data)
        terms = self.losses_of(self.fit_images(images, training=False))
        return self._update_trackers(terms, tf.shape(images)[0])

    def predict_step(self, data):
        return self.infer(self._images_of(data))

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def infer(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Inference: a pure function of an image batch ``(B, H, W, 3)`` in [0, 1].

        Returns:
            dict with ``correspondence`` (B, H, W, 2), ``depth`` (B, H, W),
            ``confidence`` (B, H, W, 2) (geometric, photometric), ``K``, ``R`` (B, 3, 3),
            ``t`` (B, 3), ``psi`` (B,), ``p_hat``, ``q_hat``, ``shape_coefficients`` (B, Ks),
            ``expression_coefficients`` (B, Ke), ``albedo_coefficients`` (B, Kr),
            ``lighting`` (B, 3, 9), ``vertices`` (B, V, 3) mm in model space,
            ``landmarks68`` (B, 68, 2) and ``landmarks5`` (B, 5, 2) pixels (the fitted model's
            landmark vertices projected by the fitted camera), ``direct_landmarks68`` and
            ``direct_landmarks5`` (read off the correspondence map, :func:`direct_landmarks`),
            ``fit_status`` and ``fit_valid`` (B,) (:func:`fit_validity`). An image whose fit
            failed says so in ``fit_valid``: its fitted outputs (camera, landmarks68/5,
            coefficients, lighting, vertices) are then no face, and are finite
            (:func:`failed_fits_zeroed`). Compiled (every product path) this holds for any
            maps; eagerly, a solve that fails outright (a singular system the priors do not
            regularise) raises :class:`~tfface.errors.SolveError` as every least-squares layer
            does, while a fit without confident pixels is reported, not raised. ``camera_fixed``
            (B,) is 1 where the fit is :meth:`inference_fit`'s fallback on a fixed camera,
            ``upright_fit`` (B,) where it is its upright pass's.
        """
        fit = self.inference_fit(images)
        return {**self.outputs_of(fit), "camera_fixed": fit["camera_fixed"], "upright_fit": fit["upright_fit"]}

    def inference_fit(self, images: tf.Tensor, maps: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """The inference fit of ``images`` ``(B, H, W, 3)``: :meth:`fit_maps` of their
        :meth:`inference_maps` (or of ``maps``), with a fixed camera where the free one fails
        (:meth:`fit_with_fallback`) and, with ``config.inference_upright_pass`` and no ``maps``
        given, fitted again in the crop turned upright (:mod:`tfface.upright_pass`).

        The upright pass turns each image whose first fit is valid about its centre by minus that
        fit's roll (:func:`~tfface.upright_pass.camera_roll`), predicts the maps of the turned
        image, turns them back (:func:`~tfface.upright_pass.maps_turned_back`) and fits them
        against the image itself; the second fit is kept where it is valid too. Every image of the
        batch is fitted twice: the pass is not behind a ``tf.cond`` (TFLite's converter cannot
        merge it with the fallback's).

        Returns:
            :meth:`fit_maps`'s dict, plus ``camera_fixed`` and ``upright_fit`` ``(B,)`` float32: 1
            where the fit is the fixed-camera fallback's, and where it is the upright pass's.
        """
        images = tf.convert_to_tensor(images)  # its dtype is checked, not cast (predict_maps)
        upright_pass = maps is None and self.config.inference_upright_pass
        first = self.fit_with_fallback(images, self.inference_maps(images) if maps is None else maps)
        if not upright_pass:
            return {**first, "upright_fit": tf.zeros_like(first["camera_fixed"])}
        first_valid = self.fit_validity(first)["fit_valid"] > 0
        angle = -tf.where(first_valid, camera_roll(first["R"]), 0.0)
        turned_maps = self.inference_maps(turn_about_centre(images, angle))
        second = self.fit_with_fallback(images, maps_turned_back(turned_maps, angle))
        use = first_valid & (self.fit_validity(second)["fit_valid"] > 0)
        return {**per_image_choice(use, second, first), "upright_fit": tf.cast(use, tf.float32)}

    def fit_with_fallback(self, images: tf.Tensor, maps: tf.Tensor) -> dict[str, tf.Tensor]:
        """:meth:`fit_maps` of ``maps`` ``(B, H, W, 5)`` for inference, with a fixed camera where
        the free one is implausible.

        Where the free inverse camera is implausible (``fit_status``
        :data:`FIT_IMPLAUSIBLE_CAMERA`: the network's maps of a turned head sometimes fit a camera
        with a focal length of a few pixels or one behind the head) and ``fallback_focal`` is set
        (config ``inference_fallback_focal``), the same maps are fitted again under
        :func:`~tfface.geometry.camera.centred_intrinsics` of that focal length, solving only the
        pose, depth scale and shape, and that fit is kept where it is valid. An ill-posed fit (too
        little confident data: no face) is never refitted. Only the images that need it are
        fitted again, and only in a batch that has one (``tf.cond``).

        Returns:
            :meth:`fit_maps`'s dict, plus ``camera_fixed`` ``(B,)`` float32: 1 where the fit is the
            fallback's.
        """
        fit = self.fit_maps(images, maps, inference=True)
        none_fixed = tf.zeros(tf.shape(images)[:1], tf.float32)
        if self.fallback_focal is None:
            return {**fit, "camera_fixed": none_fixed}
        implausible = tf.equal(self.fit_validity(fit)["fit_status"], float(FIT_IMPLAUSIBLE_CAMERA))

        def refit():
            index = tf.cast(tf.where(implausible), tf.int32)  # (N, 1)
            intrinsics = centred_intrinsics(self.fallback_focal, tf.shape(images)[2], tf.shape(index)[0])
            fallback = self.fit_maps(tf.gather_nd(images, index), tf.gather_nd(maps, index), inference=True,
                                     intrinsics=intrinsics)
            use = tf.scatter_nd(index, self.fit_validity(fallback)["fit_valid"], tf.shape(none_fixed)) > 0
            scattered = {name: tf.scatter_nd(index, fallback[name], tf.shape(value)) for name, value in fit.items()}
            return {**per_image_choice(use, scattered, fit), "camera_fixed": tf.cast(use, tf.float32)}

        return tf.cond(tf.reduce_any(implausible), refit, lambda: {**fit, "camera_fixed": none_fixed})

    def outputs_of(self, fit: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The inference outputs (see :meth:`infer`, but ``camera_fixed`` and ``upright_fit``) of a
        :meth:`fit_maps` result."""
        landmarks68 = self.fit_landmarks68(fit)
        ks = self.uv_model.model.num_shape
        maps = fit["maps"]
        direct68 = direct_landmarks(maps, self._landmark_uv)
        validity = self.fit_validity(fit, landmarks68)
        return failed_fits_zeroed({
            "correspondence": maps[..., 0:2], "depth": maps[..., 2], "confidence": maps[..., 3:5],
            "K": fit["K"], "R": fit["R"], "t": fit["t"], "psi": fit["psi"],
            "p_hat": fit["p_hat"], "q_hat": fit["q_hat"],
            "shape_coefficients": fit["coefficients"][:, :ks],
            "expression_coefficients": fit["coefficients"][:, ks:],
            "albedo_coefficients": fit["albedo_coefficients"], "lighting": fit["lighting"],
            "vertices": fit["vertices"], "landmarks68": landmarks68,
            "landmarks5": landmarks5_from_68_tf(landmarks68),
            "direct_landmarks68": direct68, "direct_landmarks5": landmarks5_from_68_tf(direct68),
            **validity,
        }, validity["fit_valid"])

    def fit_landmarks68(self, fit: dict[str, tf.Tensor]) -> tf.Tensor:
        """``(B, 68, 2)`` pixels of a :meth:`fit_maps` result's landmarks (:func:`project_points`)."""
        return project_points(tf.gather(fit["vertices"], self._landmarks68, axis=1), fit["p_hat"], fit["q_hat"])

    def fit_validity(self, fit: dict[str, tf.Tensor], landmarks68: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """``fit_status`` and ``fit_valid`` (B,) (:func:`fit_validity`) of a :meth:`fit_maps` result
        and its ``landmarks68`` (B, 68, 2) pixels (default :meth:`fit_landmarks68`)."""
        landmarks68 = self.fit_landmarks68(fit) if landmarks68 is None else landmarks68
        return fit_validity(fit["well_posed"], fit["K"], fit["R"], fit["t"], landmarks68, tf.shape(fit["maps"])[2])

    def get_config(self):
        if self.uv_model_path is None:
            raise NotImplementedError("FaceModel built from an in-memory UV-3DMM: pass its file path to serialise")
        return {**super().get_config(), "uv_model": self.uv_model_path,
                "config": dataclasses.asdict(self.config)}
