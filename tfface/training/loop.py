"""Pretraining and main training runs with checkpoints, resumption and TensorBoard logs.

A run lives in a work folder::

    <workdir>/pretrain/backup/       BackupAndRestore state of the pretraining (resumable)
    <workdir>/pretrain/unet.weights.h5  the pretrained U-Net
    <workdir>/train/backup/          BackupAndRestore state of the main training (resumable)
    <workdir>/train/checkpoints/step-XXXXXX.weights.h5  weights every ``checkpoint_every`` steps
    <workdir>/train/final.weights.h5 weights at the end of the run
    <workdir>/logs/{pretrain,train}  TensorBoard scalars and image panels
    <workdir>/config.json            the configuration

Epochs are ``checkpoint_every`` steps long, so the backup taken at every epoch end is the last
checkpoint and a killed run resumes exactly there (Keras restores the epoch and the optimizer's
step count; the steps after the last checkpoint are redone).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import tensorflow as tf

from tfface import losses
from tfface.errors import InputError
from tfface.model import FaceModel
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.training import callbacks as cb
from tfface.training.config import TrainConfig
from tfface.training.distribute import distribute_batches
from tfface.training.pretraining import pretraining_dataset, pretraining_targets
from tfface.training.self_labels import labelled_photos
from tfface.training.sources import SyntheticData, TrainingData


@keras.saving.register_keras_serializable(package="tfface")
class PretrainingLoss(keras.losses.Loss):
    """:func:`tfface.losses.pretraining_loss` as a Keras loss (y_true: target maps).

    Args:
        depth_weight: weight of the squared depth error against the squared UV error.
    """

    def __init__(self, depth_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.depth_weight = depth_weight

    def call(self, y_true, y_pred):
        return losses.pretraining_loss(y_pred, y_true, depth_weight=self.depth_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "depth_weight": self.depth_weight}


def build_model(uv_model: UVMorphableModel | str | Path, config: TrainConfig,
                strategy: tf.distribute.Strategy | None = None) -> FaceModel:
    """A compiled, built :class:`FaceModel` created in ``strategy``'s scope.

    Initial weights are seeded with ``config.seed`` (the same on every worker and every run).
    """
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = FaceModel(uv_model, config)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        model.build_for_training()
    return model


def load_trained(uv_model: UVMorphableModel | str | Path, config: TrainConfig, workdir: str | Path,
                 weights: str | Path | None = None, pretrained: bool = False) -> FaceModel:
    """:func:`build_model` with trained weights: ``weights``, or the run's ``train/final.weights.h5``
    (with ``pretrained``: the run's pretrained U-Net ``pretrain/unet.weights.h5``, before any
    unsupervised step).

    Raises:
        InputError: if the weights file does not exist.
    """
    default = Path(workdir) / ("pretrain/unet.weights.h5" if pretrained else "train/final.weights.h5")
    path = Path(weights) if weights else default
    if not path.exists():
        raise InputError(f"no trained weights at {path}; run `tfface train` first or pass --weights")
    model = build_model(uv_model, config)
    (model.unet if pretrained else model).load_weights(path)
    return model


def _epochs(steps: int, every: int) -> tuple[int, int]:
    every = max(1, min(int(every), int(steps)))
    return math.ceil(steps / every), every


def _training_data(source: TrainingData | str | Path) -> TrainingData:
    return source if isinstance(source, TrainingData) else SyntheticData(Path(source))


def _profiling(model: FaceModel, config: TrainConfig, source: TrainingData) -> dict:
    """The face-profiling arguments of :func:`pretraining_dataset` (none when ``pretrain_max_yaw``
    and ``pretrain_max_pitch`` are 0: supplement F's frontal target only)."""
    if not (config.pretrain_max_yaw or config.pretrain_max_pitch):
        return {}
    from tfface.training.profiling import FaceProfiler

    return {"profiler": FaceProfiler(model.uv_model, source.mean_landmarks5(), config.image_size,
                                     framing=config.profile_framing, relight=config.profile_relight),
            "max_turn": _max_turn(config)}


def _max_turn(config: TrainConfig) -> tuple[float, float]:
    """The largest ``(|yaw|, |pitch|)`` (radians) a profiled pretraining example is turned by."""
    return math.radians(config.pretrain_max_yaw), math.radians(config.pretrain_max_pitch)


def _pretraining_examples(model: FaceModel, config: TrainConfig, source: TrainingData,
                          batch_size: int) -> tf.data.Dataset:
    """Supplement F's batches ``((B, H, W, 3) images, (B, H, W, 4) target maps)``, repeated forever:
    the aligned photos under a random similarity, turned when the configuration profiles; with
    ``self_labels``, a share of each batch is self-labelled photos under their own similarity, a
    share ``self_label_profile_share`` of those turned on their own fits. Every part keeps the share
    ``no_face_fraction`` of face-free examples."""
    targets = pretraining_targets(model.uv_model, source.mean_landmarks5(), config.image_size)
    confine = config.seam_confinement(source.aligned_content_radius())
    labelled = 0
    if config.self_labels:
        if batch_size < 2:
            raise InputError(f"self-labelled photos share batches of at least 2 examples, not {batch_size}")
        labelled = min(max(round(config.self_label_share * batch_size), 1), batch_size - 1)
    examples = pretraining_dataset(source.aligned_images().take(config.aligned_count).cache()
                                   .shuffle(1024, seed=config.seed),
                                   targets, batch_size - labelled, config.pretraining_ranges(), seed=config.seed,
                                   confine=confine, no_face_fraction=config.no_face_fraction,
                                   **_profiling(model, config, source))
    if not labelled:
        return examples
    turned = round(config.self_label_profile_share * labelled)
    parts = [examples]
    if labelled > turned:
        photos = labelled_photos(config.self_labels, config.image_size, turned_repeat=config.self_label_turned_repeat,
                                 seed=config.seed).shuffle(4096, seed=config.seed)
        parts.append(pretraining_dataset(photos, None, labelled - turned, config.pretraining_ranges(),
                                         seed=config.seed + 1, confine=confine,
                                         no_face_fraction=config.no_face_fraction))
    if turned:
        from tfface.training.profiling import FitProfiler

        photos = labelled_photos(config.self_labels, config.image_size, fits=True).shuffle(4096, seed=config.seed + 2)
        parts.append(pretraining_dataset(
            photos, None, turned, config.pretraining_ranges(), seed=config.seed + 2, confine=confine,
            no_face_fraction=config.no_face_fraction,
            profiler=FitProfiler(model.uv_model, config.image_size, relight=config.profile_relight,
                                  surroundings=config.profile_surroundings),
            max_turn=_max_turn(config)))
    return tf.data.Dataset.zip(*parts).map(
        lambda *batches: tuple(tf.concat([batch[i] for batch in batches], 0) for i in range(2)))


def _anchored(model: FaceModel, config: TrainConfig, source: TrainingData):
    """``() -> tf.data.Dataset`` of the main training's unbatched examples: its images, each with
    one pretraining example ``anchor = (image, target maps)`` when ``pose_anchor_weight`` > 0."""
    if not config.pose_anchor_weight > 0:
        return source.training_images

    def make_dataset() -> tf.data.Dataset:
        anchors = _pretraining_examples(model, config, source, config.batch_size).unbatch()
        return tf.data.Dataset.zip(source.training_images(), anchors).map(
            lambda image, anchor: {"image": image, "anchor": anchor})

    return make_dataset


def pretraining_rate(config: TrainConfig) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The pretraining's learning rate: constant, or a cosine decay to ``pretrain_final_learning_rate``
    over ``pretrain_steps``."""
    rate, final = config.pretrain_learning_rate, config.pretrain_final_learning_rate
    if final is None:
        return rate
    return keras.optimizers.schedules.CosineDecay(rate, max(config.pretrain_steps, 1), alpha=final / rate)


def load_unet_weights(model: FaceModel, path: str | Path) -> None:
    """Load U-Net weights saved by a pretraining (``<run>/pretrain/unet.weights.h5``) into ``model``.

    Raises:
        InputError: when ``path`` is no file, or holds no weights of this configuration's U-Net.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no U-Net weights file at {path}")
    try:
        model.unet.load_weights(path)
    except (ValueError, OSError) as error:
        raise InputError(f"{path} holds no weights of this configuration's U-Net: {error}") from error


def pretrain(model: FaceModel, config: TrainConfig, source: TrainingData | str | Path, workdir: str | Path,
             time_limit: float | None = None, strategy: tf.distribute.Strategy | None = None,
             start_from: str | Path | None = None) -> Path:
    """Supervised pretraining of the U-Net (supplement F); returns the saved U-Net weights path.

    The target maps are rendered once from the mean shape placed at the mean 5-landmark position
    of the aligned images; images and maps share one random similarity per example.

    Args:
        source: the run's data (:class:`TrainingData`, or a synthetic TFRecord folder).
        start_from: U-Net weights (:func:`load_unet_weights`) the pretraining continues from for
            ``pretrain_steps`` instead of starting from the initialisation; a resumed
            pretraining's backup overrides them.
    """
    strategy = strategy or tf.distribute.get_strategy()
    source = _training_data(source)
    out = Path(workdir) / "pretrain"
    weights = out / "unet.weights.h5"
    if weights.exists():
        model.unet.load_weights(weights)
        return weights
    if start_from is not None:
        load_unet_weights(model, start_from)
        print(f"pretraining continues from {start_from}", flush=True)
    dataset = _pretraining_examples(model, config, source, config.pretrain_batch_size)
    with strategy.scope():
        inputs = keras.Input((config.image_size, config.image_size, 3))
        network = keras.Model(inputs, model.predict_maps(inputs, training=None), name="pretraining")
        network.compile(optimizer=keras.optimizers.Adam(pretraining_rate(config)),
                        loss=PretrainingLoss(config.pretrain_depth_weight))
    epochs, per_epoch = _epochs(config.pretrain_steps, config.checkpoint_every)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup"), save_freq="epoch", double_checkpoint=True,
                                         delete_checkpoint=False),
        keras.callbacks.TensorBoard(str(Path(workdir) / "logs" / "pretrain"), update_freq=config.summary_every),
        cb.StepProgress(config.pretrain_steps, "pretrain", time_limit=time_limit),
        cb.StopOnNonFiniteSteps(),
    ]
    network.fit(dataset, epochs=epochs, steps_per_epoch=per_epoch, callbacks=callbacks, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.unet.save_weights(weights)
    return weights


def train(model: FaceModel, config: TrainConfig, source: TrainingData | str | Path, workdir: str | Path,
          time_limit: float | None = None, evaluate_every: int | None = None,
          strategy: tf.distribute.Strategy | None = None,
          extra_callbacks: list | None = None) -> dict:
    """Unsupervised main training with ``model.fit`` (only images are read).

    Args:
        model: a built FaceModel (its U-Net usually pretrained).
        config: the configuration.
        source: the run's data (:class:`TrainingData`, or a synthetic TFRecord folder).
        workdir: run folder (see module docstring).
        time_limit: stop after this many seconds (the state stays resumable).
        evaluate_every: evaluate held-out landmark NME every N steps (ground truth read for
            evaluation only); None disables.
        strategy: tf.distribute strategy the model was built in.
        extra_callbacks: more Keras callbacks.

    Returns:
        dict with ``steps`` (optimizer steps done), ``history`` (Keras logs) and ``evaluations``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    source = _training_data(source)
    out = Path(workdir) / "train"
    logs = Path(workdir) / "logs" / "train"
    dataset = distribute_batches(strategy, _anchored(model, config, source), config.batch_size)
    epochs, per_epoch = _epochs(config.steps, config.checkpoint_every)
    preview = source.preview_images(4)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup"), save_freq="epoch", double_checkpoint=True,
                                         delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(str(out / "checkpoints" / "step-{epoch:06d}.weights.h5"),
                                        save_weights_only=True, save_freq="epoch"),
        cb.TranslationSchedule(config.translation_weight, config.translation_decay_steps),
        cb.CosineLearningRate(config.learning_rate, config.final_learning_rate, config.steps, time_limit,
                              config.warmup_steps),
        keras.callbacks.TensorBoard(str(logs), update_freq=config.summary_every),
        cb.ImageSummaries(str(logs / "images"), preview, config.summary_every),
        cb.StepProgress(config.steps, "train", keys=("loss", "geometric", "photometric", "inliers"),
                        time_limit=time_limit),
        cb.StopOnNonFiniteSteps(),
    ]
    evaluation = None
    evaluate = source.evaluator() if evaluate_every else None
    if evaluate is not None:
        evaluation = cb.PeriodicEvaluation(evaluate, evaluate_every, str(logs))
        callbacks.append(evaluation)
    callbacks += extra_callbacks or []
    callbacks.append(cb.ReportStart("main training", config.steps))
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=per_epoch, callbacks=callbacks, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.save_weights(out / "final.weights.h5")
    return {"steps": int(model.optimizer.iterations.numpy()), "history": history.history,
            "evaluations": evaluation.history if evaluation else []}


def save_config(config: TrainConfig, workdir: str | Path) -> None:
    """Write ``config.json`` in the run folder (refuses to mix configurations in one run).

    A field the saved file lacks (a run started before the field existed) counts as its default,
    which is what that run used.

    Raises:
        InputError: if the folder's ``config.json`` holds a different configuration.
    """
    path = Path(workdir) / "config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if {**json.loads(TrainConfig().to_json()), **previous} != json.loads(config.to_json()):
            raise InputError(f"{path} holds a different configuration; use another --workdir")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json())
