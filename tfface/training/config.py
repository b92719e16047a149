"""Named training configurations and their JSON files.

A :class:`TrainConfig` holds every hyperparameter of pretraining and the main unsupervised
training. ``tfface train --config NAME|PATH`` takes one of :data:`CONFIGS` or a JSON file
with a subset of the fields (the rest default to the ``small`` config).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tfface.data.augment import SimilarityRange
from tfface.errors import InputError
from tfface.geometry.camera import MAX_FOCAL_WIDTHS, MIN_FOCAL_WIDTHS
from tfface.layers.vignette import FEATHER
from tfface.runtime import native_bfloat16

#: How face profiling frames a turned example (:mod:`tfface.training.profiling`): ``centroid``
#: keeps the head centroid where the frontal face's was; ``landmark_box`` puts its 68-landmark
#: box where the frontal face's box is.
PROFILE_FRAMINGS = ("centroid", "landmark_box")

#: What fills the pixels around a face turned on its fit (:class:`tfface.training.profiling.FitProfiler`).
PROFILE_SURROUNDINGS = ("mirrored", "turned")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the network, the in-network fit and training.

    Attributes:
        name: configuration name.
        image_size: square input size in pixels (multiple of 16).
        variant, width: U-Net variant (supplement N) and extra width multiplier.
        depth_offset: added to the softplus depth output.
        num_samples: pixels sampled per image for the solves (supplement C: 10,000).
        sample_threshold: relative confidence threshold of the sampling (supplement C: 0.001).
        inference_samples: pixels of the inference fit's fixed lattice (None: every pixel),
            weighted to estimate the training fit (``LatticePixelSampler``).
        robust_refits: re-solves of the inference fit's geometry, each without the samples
            whose residual exceeds ``tau_geometric`` in the previous solve (the pixels the
            truncated training loss gives up on).
        inference_flip_test: the inference fit fuses the maps of the image with those of its
            mirror image (:mod:`tfface.flip_test`; the U-Net runs twice). Needs a left-right
            symmetric model (:func:`tfface.morphable.symmetry.mirror_partners`).
        inference_upright_pass: the inference fit fits each face again in its image turned
            upright by the first fit's roll, the maps of the turned image turned back
            (:mod:`tfface.upright_pass`; the U-Net runs twice as often), and keeps the second fit
            where both are valid (BUILD.md, "Faces turned in the picture's plane: the upright pass").
        inference_fallback_focal: focal length (image widths) of the fixed camera the inference fit
            falls back on where its free camera is implausible (None: no fallback): square pixels,
            the principal point at the image centre, pose and shape solved as before
            (:meth:`tfface.model.FaceModel.inference_fit`; BUILD.md, "A fixed camera where the
            free one is implausible").
        inference_prior_scale: factor on the shape and expression prior of the inference fit.
            Training needs a weak prior (a heavy one makes a fixed mean face score better than
            the true fit); fitting a trained network's maps, a heavier one gives better landmarks
            (BUILD.md: 4 for the small config, chosen on training images; 64 for ``photos``,
            chosen on the AFLW2000-3D dev photos, "A heavier inference prior").
        num_shape, num_expression, num_albedo: leading 3DMM modes used in the fit (None: all).
            Shape and expression default to all: the synthetic faces use every mode, and fed
            the ground-truth maps of the held-out set, the fit's 68-landmark NME is 1.1% with
            all modes (100 + 53 for ICT) but 3.7% with 40 + 20, a floor the trained network
            cannot get under (tools/fit_floor.py).
        tau_geometric: robust-loss threshold of the geometric residual, mm.
        soft_geometric_loss: bound the geometric loss smoothly (Geman-McClure,
            :func:`tfface.losses.truncated_confidence_loss`) instead of truncating it: beyond
            ``tau_geometric`` a truncated residual has no gradient, and on real photos the
            photometric term then pulls the correspondences off any consistent geometry
            (measured side by side in BUILD.md, "Real photographs").
        tau_photometric: robust-loss threshold of the photometric residual (colour units).
        photometric_weight: weight of the photometric loss relative to the geometric one.
        joint_photometric_confidence: weigh the photometric loss by the product of the two
            confidences instead of the photometric one alone, so that a pixel can lower the
            photometric loss only where it is explained geometrically too. On real photos without
            it the network gave up the geometry (geometric confidence near 0 everywhere) and painted
            the image with correspondences into the albedo; with it, at the same learning rate,
            the geometry still drifted past ``tau_geometric`` (BUILD.md, "Real photographs").
        stat_weight: weight of E_stat in the loss, relative to the geometric solve's own scale:
            the loss adds ``stat_weight * sum_i omega_i m_i^2 / (num_samples * tau_geometric^2)``,
            the same balance of prior and data the solve uses (a larger weight makes one fixed
            mean face score better than the true fit; tools/diagnose_objective.py shows it).
        coefficient_prior: initial adaptive weight omega_i (= alpha_i^2 of the geometric solve,
            in units of one sample with unit confidence, i.e. a squared residual in mm^2 that one
            unit of coefficient is worth). Supplement G starts at 0.1; with millimetre residuals
            and a planar pretrained depth that lets the coefficients explode, so the default is
            larger (the adaptation then moves it by at most 1% per step).
        z0: the fixed camera position (0, 0, z0) in front of the face, mm.
        translation_weight, translation_decay_steps: early camera-translation regulariser
            weight and its exponential decay (supplement F).
        lighting_weight: ξ, the regulariser of the 27 inverse-SH coefficients (towards neutral
            light), in units of one sample with unit confidence.
        albedo_weight: γ^2, the regulariser of the albedo coefficients, same units. Both are
            weak (1 and 10 against 2,000 samples): strong priors saturate the photometric loss
            even at the true fit. Over-expansion of the face onto smooth backgrounds is
            prevented by the joint confidence sampling and textured backgrounds, not by them.
        ridge: Tikhonov ridge added to the normal equations.
        batch_size: global batch size of the main training (4 for the small config: in a
            24-minute side-by-side run it reached 9.3% held-out NME against 9.6% at batch 8, taking
            twice the steps in the same time; batch 2 is fragile, see BUILD.md).
        learning_rate: Adam learning rate at the start of the main training (5e-4 for the
            small config: side by side in 24-minute runs it beat 2e-4, while 1e-3 was worse early).
        final_learning_rate: the rate the cosine decay reaches at the end of the run (its
            steps, or its time budget when that ends it first).
        warmup_steps: main-training steps over which the rate ramps up linearly from
            ``learning_rate / warmup_steps`` (0: none; 500 in the small config: without one,
            Adam's first full-size steps throw the pretrained network off, see BUILD.md).
        steps: main-training steps.
        pretrain_steps, pretrain_learning_rate, pretrain_batch_size: supervised pretraining
            (supplement F).
        pretrain_depth_weight: weight of the squared depth error against the squared UV error in
            the supervised pretraining loss and the pose anchor (:func:`tfface.losses.pretraining_loss`).
            Heavier weights (4, 10, 25) turn the fitted heads further but cost landmark accuracy on
            real photos (BUILD.md, "A heavier depth term turns the heads").
        self_labels: an ``.npz`` of photos labelled with a trained network's fits
            (:mod:`tfface.training.self_labels`); with it, a share ``self_label_share`` of every
            pretraining and pose-anchor batch comes from them.
        self_label_profile_share: the share of those labelled examples that are turned on their
            own fits (:class:`tfface.training.profiling.FitProfiler`, to ``pretrain_max_yaw`` and
            ``pretrain_max_pitch``) rather than shown as labelled; the labels must keep their fits.
        self_label_turned_repeat: how many times as often as the others a labelled photo whose
            fitted yaw is at least :data:`tfface.training.self_labels.TURNED_YAW` is shown as
            labelled (real turned heads, the fits' weak spot; BUILD.md, "Turned heads shown more
            often"); above 1 the labels must keep their fits.
        pretrain_final_learning_rate: with a value, the pretraining rate decays along a cosine
            from ``pretrain_learning_rate`` to it over ``pretrain_steps`` (Adam's iteration count,
            restored on resume); None: constant.
        no_face_fraction: share of pretraining examples replaced by face-free textures with zero
            target confidence (so that the network reports no face instead of inventing one).
        checkpoint_every: steps between checkpoints and BackupAndRestore backups.
        summary_every: steps between TensorBoard scalar/image summaries (250 in the small
            config: one set of image panels costs about 0.45 s, three steps' worth).
        mixed_precision: run the U-Net in mixed bfloat16 (the solves stay float32); ``None``
            (the default): where the CPU computes bfloat16 natively
            (:func:`tfface.runtime.native_bfloat16`, see :meth:`uses_mixed_precision`). There,
            in 24-minute side-by-side runs from one pretrained network it took 11% more steps
            and reached 8.9% held-out NME against 9.3% in float32; pretraining steps are 12%
            faster. Without native bfloat16 a training step is about 5 times slower than in
            float32. The tiny test config stays float32.
        synchronized_batchnorm: batch-norm statistics over all replicas (tf.distribute).
        synthetic_count, heldout_count: training and held-out synthetic images to generate.
        aligned_count: roughly aligned (near-frontal) synthetic images for pretraining.
        max_yaw, max_pitch, max_roll: pose ranges (degrees) of the synthetic training and
            held-out images.
        augment_rotation, pretrain_scale, pretrain_translation: the random similarity of the
            pretraining (and of the pose anchor's examples): in-plane rotation range (degrees),
            scale range and shift (fraction of the side). The supervised targets move with it,
            so it is what teaches the network to read the face's placement off the face.
        pretrain_max_yaw, pretrain_max_pitch: with either above 0, every pretraining photo's face is
            turned by a yaw and a pitch drawn uniformly within them (degrees) and supervised with
            the turned mean shape's maps (:mod:`tfface.training.profiling`); 0: supplement F's
            frontal target only.
        profile_framing: how a turned example is framed (one of :data:`PROFILE_FRAMINGS`):
            ``centroid`` keeps the head centroid where the frontal face's was; ``landmark_box``
            frames it by its 68-landmark box, as detectors and the evaluation protocol frame faces.
        profile_relight: whether a turned example is relit under its photo's estimated light
            (:mod:`tfface.training.profiling`, "Relighting").
        profile_surroundings: what fills the pixels around a labelled photo's face turned on its
            fit, one of :data:`PROFILE_SURROUNDINGS` (:class:`tfface.training.profiling.FitProfiler`):
            ``mirrored`` the photo as it is, ``turned`` the photo turned with the face.
        pose_anchor_weight: weight of the supervised pretraining loss kept in the main training
            on a batch of pretraining examples (turned as in pretraining) beside every
            unsupervised batch, an anchor against the unsupervised objective's pull towards one
            frontal face (BUILD.md, "Training on real photographs"); 0: none.
        equivariance_weight, equivariance_rotation, equivariance_scale, equivariance_translation:
            weight of :func:`tfface.losses.equivariance_loss` in the main training: every batch
            is also warped by a random similarity (rotation range in degrees, scale range, shift
            as a fraction of the side; the uncovered pixels filled from another image) and the
            warped image's correspondence must be the warped correspondence; 0: none.
        synthetic_mix: fraction of the main training's images on real photos that are synthetic
            renders (their ground truth unread, the same unsupervised loss): renders show poses up
            to ``max_yaw`` that the photo pretraining, frontal by construction, never does.
        input_vignette: radius (fraction of the side) of the centred disc through which the
            U-Net sees its input, the rest grey (:mod:`tfface.layers.vignette`: the seams of the
            augmentation's background fill must not tell the face's placement); 0: all of it.
        seam_free: confine every random similarity (photos, pretraining, equivariance) so that
            the vignette's disc shows only photo, never fill or its seams
            (:func:`tfface.data.augment.confine_disc`, :meth:`seam_radius`); needs
            ``input_vignette``.
        photo_rotation, photo_scale, photo_translation: the random similarity of the main
            training on real photos (supplement K): in-plane rotation range (degrees), scale
            range and shift (fraction of the side), on top of each collection's framing.
        seed: random seed of sampling, data and initialisation.
    """

    name: str = "small"
    image_size: int = 128
    variant: str = "regular"
    width: float = 0.25
    depth_offset: float = 0.1
    num_samples: int = 2000
    sample_threshold: float = 0.001
    inference_samples: int | None = None
    robust_refits: int = 2
    inference_flip_test: bool = False
    inference_upright_pass: bool = False
    inference_prior_scale: float = 4.0
    inference_fallback_focal: float | None = None
    num_shape: int | None = None
    num_expression: int | None = None
    num_albedo: int | None = 20
    tau_geometric: float = 10.0
    soft_geometric_loss: bool = False
    tau_photometric: float = 0.15
    photometric_weight: float = 20.0
    joint_photometric_confidence: bool = False
    stat_weight: float = 1.0
    coefficient_prior: float = 100.0
    z0: float = 600.0
    translation_weight: float = 100.0
    translation_decay_steps: float = 1000.0
    lighting_weight: float = 1.0
    albedo_weight: float = 10.0
    ridge: float = 1.0e-6
    batch_size: int = 4
    learning_rate: float = 5.0e-4
    final_learning_rate: float = 1.0e-6
    warmup_steps: int = 0
    steps: int = 4000
    pretrain_steps: int = 4000
    pretrain_learning_rate: float = 1.0e-3
    pretrain_batch_size: int = 8
    pretrain_final_learning_rate: float | None = None
    pretrain_depth_weight: float = 1.0
    self_labels: str | None = None
    self_label_share: float = 0.5
    self_label_profile_share: float = 0.0
    self_label_turned_repeat: int = 1
    no_face_fraction: float = 0.2
    checkpoint_every: int = 100
    summary_every: int = 100
    mixed_precision: bool | None = None
    synchronized_batchnorm: bool = False
    synthetic_count: int = 4000
    heldout_count: int = 200
    aligned_count: int = 1000
    max_yaw: float = 30.0
    max_pitch: float = 15.0
    max_roll: float = 30.0
    augment_rotation: float = 30.0
    pretrain_scale: tuple[float, float] = (0.85, 1.15)
    pretrain_translation: float = 0.06
    pretrain_max_yaw: float = 0.0
    pretrain_max_pitch: float = 0.0
    profile_framing: str = "centroid"
    profile_relight: bool = False
    profile_surroundings: str = "mirrored"
    pose_anchor_weight: float = 0.0
    equivariance_weight: float = 0.0
    equivariance_rotation: float = 30.0
    equivariance_scale: tuple[float, float] = (0.8, 1.25)
    equivariance_translation: float = 0.1
    input_vignette: float = 0.0
    seam_free: bool = False
    synthetic_mix: float = 0.0
    photo_rotation: float = 15.0
    photo_scale: tuple[float, float] = (0.9, 1.1)
    photo_translation: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("photo_scale", "equivariance_scale", "pretrain_scale"):  # JSON gives a list
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for ranges in (self.pretraining_ranges, self.photo_ranges, self.equivariance_ranges):
            ranges()  # raises InputError on a bad range
        if self.seam_free and not 0.0 < self.input_vignette < 0.5 - FEATHER:
            raise InputError(f"seam_free needs an input_vignette in (0, {0.5 - FEATHER}), got {self.input_vignette}")
        if self.profile_framing not in PROFILE_FRAMINGS:
            raise InputError(f"profile_framing must be one of {PROFILE_FRAMINGS}, got {self.profile_framing!r}")
        if self.profile_surroundings not in PROFILE_SURROUNDINGS:
            raise InputError(f"profile_surroundings must be one of {PROFILE_SURROUNDINGS}, "
                             f"got {self.profile_surroundings!r}")
        if not self.pretrain_depth_weight > 0:
            raise InputError(f"pretrain_depth_weight must be positive, got {self.pretrain_depth_weight}")
        if not 0.0 < self.self_label_share < 1.0:
            raise InputError(f"self_label_share must lie in (0, 1), got {self.self_label_share}")
        if not 0.0 <= self.self_label_profile_share <= 1.0:
            raise InputError(f"self_label_profile_share must lie in [0, 1], got {self.self_label_profile_share}")
        if not (isinstance(self.self_label_turned_repeat, int) and self.self_label_turned_repeat >= 1):
            raise InputError(f"self_label_turned_repeat must be a whole number of at least 1, "
                             f"got {self.self_label_turned_repeat!r}")
        focal = self.inference_fallback_focal
        if focal is not None and not MIN_FOCAL_WIDTHS <= focal <= MAX_FOCAL_WIDTHS:
            raise InputError(f"inference_fallback_focal must lie in [{MIN_FOCAL_WIDTHS}, {MAX_FOCAL_WIDTHS}] image widths "
                             f"(a plausible camera's), got {focal}")
        final = self.pretrain_final_learning_rate
        if final is not None and not 0.0 <= final <= self.pretrain_learning_rate:
            raise InputError(f"pretrain_final_learning_rate must lie in [0, {self.pretrain_learning_rate}], got {final}")

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (unknown fields raise :class:`InputError`)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"unknown training config fields: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def pretraining_ranges(self) -> SimilarityRange:
        """The random similarity of the pretraining and of the pose anchor's examples."""
        return SimilarityRange.symmetric(self.augment_rotation, self.pretrain_scale, self.pretrain_translation)

    def photo_ranges(self) -> SimilarityRange:
        """The random similarity of the main training's photos (supplement K)."""
        return SimilarityRange.symmetric(self.photo_rotation, self.photo_scale, self.photo_translation)

    def equivariance_ranges(self) -> SimilarityRange:
        """The random similarity of the equivariance loss's warps."""
        return SimilarityRange.symmetric(self.equivariance_rotation, self.equivariance_scale,
                                         self.equivariance_translation)

    def seam_radius(self) -> float | None:
        """Radius (fraction of the side) of the disc the vignette lets through, feather included,
        kept free of seams when ``seam_free``; None otherwise."""
        return self.input_vignette + FEATHER if self.seam_free else None

    def seam_confinement(self, source_radius: float) -> tuple[float, float] | None:
        """The ``(radius, source_radius)`` of :func:`tfface.data.augment.confine_disc` for warps
        of inputs that show their photo within ``source_radius`` (fraction of the side); None
        unless ``seam_free``."""
        radius = self.seam_radius()
        return None if radius is None else (radius, source_radius)

    def uses_mixed_precision(self) -> bool:
        """``mixed_precision``, with ``None`` resolved for this machine's CPU."""
        return native_bfloat16() if self.mixed_precision is None else self.mixed_precision

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


#: The named configurations.
CONFIGS: dict[str, TrainConfig] = {
    # CPU: 128 px, quarter-width U-Net (mixed bfloat16 where native), 2,000 samples, all shape and expression modes,
    # 20 albedo modes, batch 4 (pretraining 8), 500 warm-up steps, summaries every 250 steps; inference fits
    # every pixel.
    "small": TrainConfig(warmup_steps=500, summary_every=250),
    # Real photos (the default of photo runs): small + the recipe of the shipped network in one run
    # (version 11 relit the turned faces only in 3,000 further pretraining steps; BUILD.md, "Training
    # on real photographs: what was measured", "Relighting from the start"): 6,000 aligned photos
    # and 18,000 steps of pretraining with face profiling (yaw 85, pitch 15; each turned example
    # framed by its proxy's landmark box, as a detector or the evaluation protocol frames a real
    # face, and relit under its photo's estimated light), its rate decayed to 1e-5; 800 steps of
    # main training, the photometric loss weighed by both confidences, Adam 1e-4, the pose anchor,
    # the input vignette (0.36) kept free of seams and the equivariance loss; the inference fit
    # uses the flip test, a 64 times heavier shape and expression prior (BUILD.md, "A heavier
    # inference prior") and falls back on a fixed camera of focal length 2.3 image widths (the
    # median fitted focal length, 297 px at 128, of version 14's fits of 3,000 training photos)
    # where its free camera is implausible, and fits each face again in its crop turned upright by
    # the first fit's roll (BUILD.md, "Faces turned in the picture's plane"). A labelled photo's
    # face turned on its own fit (with ``self_labels``) turns the photo around it too (BUILD.md,
    # "Turning the photo around a turned fit"), and the labelled photos whose fits are turned are shown
    # three times as often (BUILD.md, "Turned heads shown more often").
    "photos": TrainConfig(
        name="photos", warmup_steps=500, summary_every=250, aligned_count=6000, pretrain_steps=18000,
        pretrain_final_learning_rate=1.0e-5, steps=800, joint_photometric_confidence=True, learning_rate=1.0e-4,
        pretrain_max_yaw=85.0, pretrain_max_pitch=15.0, profile_framing="landmark_box", profile_relight=True,
        profile_surroundings="turned", self_label_turned_repeat=3,
        pose_anchor_weight=100.0, input_vignette=0.36, seam_free=True, equivariance_weight=100.0,
        inference_flip_test=True, inference_prior_scale=64.0, inference_fallback_focal=2.3,
        inference_upright_pass=True,
    ),
    # The paper's set-up: 224 px regular U-Net, 10,000 samples (half the pixels at inference), full
    # basis, batch 5.
    "paper": TrainConfig(
        name="paper", image_size=224, width=1.0, num_samples=10000, inference_samples=25088, num_shape=None,
        num_expression=None, num_albedo=None, batch_size=5, learning_rate=2.0e-4, steps=100000,
        pretrain_steps=14000, pretrain_batch_size=5, checkpoint_every=1000, summary_every=500,
        synthetic_count=20000, heldout_count=1000,
        max_yaw=60.0, max_pitch=25.0, max_roll=180.0, augment_rotation=180.0,
    ),
    # Tests: 32 px, tiny widths, few samples and steps.
    "tiny": TrainConfig(
        name="tiny", image_size=32, width=1 / 16, num_samples=128, num_shape=8, num_expression=4,
        num_albedo=4, batch_size=4, pretrain_batch_size=4, steps=6, pretrain_steps=4, checkpoint_every=2,
        summary_every=2, synthetic_count=16, heldout_count=8, aligned_count=8, mixed_precision=False,
    ),
}


def load_config(name_or_path: str | Path) -> TrainConfig:
    """A named configuration, or a JSON file of field overrides on top of ``small``.

    Raises:
        InputError: unknown name, unreadable/invalid JSON, or unknown fields.
    """
    key = str(name_or_path)
    if key in CONFIGS:
        return CONFIGS[key]
    path = Path(key)
    if not path.is_file():
        raise InputError(f"no training config named {key!r} (known: {sorted(CONFIGS)}) and no such file")
    try:
        fields = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read training config {path}: {error}") from error
    if not isinstance(fields, dict):
        raise InputError(f"training config {path} must hold a JSON object of fields")
    base = CONFIGS[fields.pop("base", "small")] if fields.get("base", "small") in CONFIGS else None
    if base is None:
        raise InputError(f"training config {path}: unknown base {fields['base']!r}")
    return base.replace(**fields)
