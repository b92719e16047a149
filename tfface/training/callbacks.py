"""Keras callbacks of the training loop: schedule, progress, TensorBoard images, evaluation and
the stop on non-finite steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfface import losses
from tfface.errors import InputError, SolveError
from tfface.geometry.normals import vertex_normals
from tfface.layers.preprocessing import inverse_softplus_preprocess
from tfface.render.rasterizer import interpolate, rasterize

if TYPE_CHECKING:
    from tfface.model import FaceModel


class TranslationSchedule(keras.callbacks.Callback):
    """Sets the geometric solve's camera-translation weight before every step (supplement F).

    The weight is ``initial * exp(-step / decay_steps)`` with ``step`` the optimizer's iteration
    count, so a resumed run continues the schedule where it stopped.
    """

    def __init__(self, initial: float, decay_steps: float):
        super().__init__()
        self.initial = float(initial)
        self.decay_steps = float(decay_steps)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        value = losses.translation_weight(step, self.initial, self.decay_steps)
        self.model.geometric.translation_weight.assign(value)


def run_fraction(step: int, total_steps: int, elapsed: float, time_limit: float | None) -> float:
    """Share of a run used, in [0, 1]: of its steps, or of its time budget when that runs out first."""
    used = step / max(total_steps, 1)
    if time_limit is not None:
        used = max(used, elapsed / max(time_limit, 1e-9))
    return min(max(used, 0.0), 1.0)


class CosineLearningRate(keras.callbacks.Callback):
    """Linear warm-up, then cosine decay of the optimizer's learning rate over a run bounded by
    steps or time.

    Before every step the rate is ``final + (initial - final) (1 + cos(pi f)) / 2`` with ``f``
    the :func:`run_fraction` used: of ``total_steps`` (the optimizer's iteration count, so a
    resumed run continues the schedule) or of ``time_limit`` seconds since this fit began,
    whichever is further. A time-bounded run (``tfface demo``) thus anneals to ``final`` by the
    end of its budget whatever the machine's speed; resumed after a kill, it gets a new budget
    and decays anew from the rate its step count gives. During the first ``warmup_steps``
    optimizer steps the rate is further scaled by ``(step + 1) / warmup_steps``, so Adam's first,
    full-size updates do not throw a pretrained network off its solution.
    """

    def __init__(self, initial: float, final: float, total_steps: int, time_limit: float | None = None,
                 warmup_steps: int = 0):
        super().__init__()
        if warmup_steps < 0:
            raise InputError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.initial = float(initial)
        self.final = float(final)
        self.total_steps = int(total_steps)
        self.time_limit = time_limit
        self.warmup_steps = int(warmup_steps)
        self._start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.monotonic()

    def rate(self, fraction: float, step: int | None = None) -> float:
        """The learning rate after ``fraction`` (in [0, 1]) of the run, at optimizer ``step``
        (None: past the warm-up)."""
        cosine = self.final + (self.initial - self.final) * 0.5 * (1.0 + math.cos(math.pi * fraction))
        if step is None or step >= self.warmup_steps:
            return cosine
        return cosine * (step + 1) / self.warmup_steps

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        fraction = run_fraction(step, self.total_steps, time.monotonic() - self._start, self.time_limit)
        self.model.optimizer.learning_rate.assign(self.rate(fraction, step))


class NonFiniteTrainingError(SolveError):
    """Training stopped: its steps kept giving a non-finite loss or gradient."""


def _scalar(value) -> float:
    """A logged value (a Python or NumPy scalar, or a one-element array of a multi-worker run)."""
    return float(np.ravel(np.asarray(value))[0])


class StopOnNonFiniteSteps(keras.callbacks.Callback):
    """Reports every skipped training step and stops a run after ``max_consecutive`` in a row.

    :meth:`tfface.model.FaceModel.train_step` skips a step whose loss or gradient is not finite
    and logs ``skipped_steps`` and ``consecutive_skipped_steps``; this callback prints a line per
    skipped step and, at ``max_consecutive`` skipped steps in a row, raises
    :class:`NonFiniteTrainingError`. The error leaves ``fit`` before the epoch's end, so no
    checkpoint or backup is written after it: the last one holds the last good weights (the
    skipped steps never changed them), and a resumed run starts from it.

    A model without that guard (e.g. the pretraining network) logs no ``consecutive_skipped_steps``;
    its update is applied whatever the loss, so the first non-finite ``loss`` raises at once,
    before a checkpoint could store the corrupted weights.

    Args:
        max_consecutive: skipped steps in a row that end the run (at least 1).
    """

    def __init__(self, max_consecutive: int = 5):
        super().__init__()
        if max_consecutive < 1:
            raise InputError(f"max_consecutive must be at least 1, got {max_consecutive}")
        self.max_consecutive = int(max_consecutive)
        self._skipped = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        step = int(self.model.optimizer.iterations.numpy())
        if "consecutive_skipped_steps" not in logs:
            if "loss" in logs and not math.isfinite(_scalar(logs["loss"])):
                raise NonFiniteTrainingError(f"training stopped at step {step}: the loss is not finite and this "
                                             "model has no guard against it; the last checkpoint holds the last "
                                             "good weights")
            return
        skipped, consecutive = _scalar(logs["skipped_steps"]), int(_scalar(logs["consecutive_skipped_steps"]))
        if skipped > self._skipped:
            tqdm.write(f"step {step}: non-finite loss or gradient, update skipped "
                       f"({consecutive} in a row, {int(skipped)} in all)")
        self._skipped = skipped
        if consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"training stopped at step {step}: {consecutive} consecutive steps had a non-finite loss or "
                "gradient (updates skipped, weights unchanged); the last checkpoint holds the last good weights. "
                "Look for NaN/inf images in the data or lower the learning rate, then resume.")


class ReportStart(keras.callbacks.Callback):
    """Prints the step a run starts (or resumes) at, once the backup has been restored."""

    def __init__(self, name: str, total_steps: int):
        super().__init__()
        self.name = name
        self.total_steps = int(total_steps)

    def on_train_begin(self, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        print(f"{self.name}: starting at step {step} of {self.total_steps}", flush=True)


class StepProgress(keras.callbacks.Callback):
    """A tqdm bar over a run, showing the step and the latest losses.

    Without a time limit the bar counts optimizer steps up to ``total_steps``; with one it
    counts the seconds of the time budget (the run ends when either is used up).

    Args:
        total_steps: the run's final step count.
        description: bar label.
        keys: log entries to show.
        time_limit: seconds after which training stops (``model.stop_training``), or None.
    """

    def __init__(self, total_steps: int, description: str = "train", keys: Iterable[str] = ("loss",),
                 time_limit: float | None = None):
        super().__init__()
        self.total_steps = int(total_steps)
        self.description = description
        self.keys = tuple(keys)
        self.time_limit = time_limit
        self._bar = None
        self._start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        done = int(self.model.optimizer.iterations.numpy())
        if self.time_limit is None:
            self._bar = tqdm(total=self.total_steps, initial=done, desc=self.description, unit="step",
                             dynamic_ncols=True, mininterval=2.0)
        else:
            self._bar = tqdm(total=int(self.time_limit), desc=f"{self.description} (time budget)", unit="s",
                             dynamic_ncols=True, mininterval=2.0)
        self._start = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        elapsed = time.monotonic() - self._start
        step = int(self.model.optimizer.iterations.numpy())
        shown = {k: f"{float(logs[k]):.4g}" for k in self.keys if logs and k in logs}
        if self.time_limit is None:
            self._bar.update(1)
        else:
            self._bar.update(max(0, min(int(elapsed), self._bar.total) - self._bar.n))
            shown = {"step": step, **shown}
        self._bar.set_postfix(shown, refresh=False)
        if self.time_limit is not None and elapsed > self.time_limit:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()


def scatter_samples(values: tf.Tensor, indices: tf.Tensor, height: int, width: int,
                    background: tf.Tensor | None = None) -> tf.Tensor:
    """Write per-sample values ``(B, P, C)`` at flat pixel ``indices`` ``(B, P)`` into images.

    Returns ``(B, H, W, C)``: ``background`` (or zeros) where no sample landed.
    """
    values = tf.convert_to_tensor(values, tf.float32)
    batch = tf.shape(values)[0]
    channels = values.shape[-1]
    flat = tf.zeros([batch, height * width, channels]) if background is None else tf.reshape(
        tf.cast(background, tf.float32), [batch, height * width, channels])
    rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(indices))
    scatter_index = tf.stack([rows, tf.cast(indices, tf.int32)], axis=-1)
    flat = tf.tensor_scatter_nd_update(flat, scatter_index, values)
    return tf.reshape(flat, [batch, height, width, channels])


def summary_panels(model: FaceModel, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """Images for TensorBoard (supplement Fig. 13, 19) of a :class:`tfface.model.FaceModel`.

    Returns a dict of ``(B, H, W, 3)`` float images in [0, 1]: ``input``, ``reconstruction``
    (the photometric fit's colours over the input at the sampled pixels), ``geometry`` (the
    fitted mesh, shaded, seen by the fitted camera), ``correspondence`` (u, v as red, green),
    ``confidence`` (geometric red, photometric green), ``depth`` (normalised per image) and
    ``residual`` (truncated geometric residual / tau at the samples, dark = inlier).
    """
    fit = model.fit_images(images, training=False)
    height, width = images.shape[1], images.shape[2]
    maps = fit["maps"]
    colours = inverse_softplus_preprocess(fit["reconstruction"], model.preprocessing.xi)
    reconstruction = scatter_samples(tf.clip_by_value(colours, 0.0, 1.0),
                                     fit["indices"], height, width, background=images)
    triangles = model._triangles
    fragments = rasterize(fit["vertices"], triangles, fit["K"], fit["R"], fit["t"], height, width)
    normals = interpolate(vertex_normals(fit["vertices"], triangles), triangles, fragments)
    camera_normals = tf.einsum("bij,bhwj->bhwi", fit["R"], normals)
    shade = tf.clip_by_value(-camera_normals[..., 2:3], 0.0, 1.0) * fragments.mask[..., None]
    geometry = fragments.mask[..., None] * (0.2 + 0.8 * shade) + (1 - fragments.mask[..., None]) * 0.5 * images
    depth = maps[..., 2:3]
    low = tf.reduce_min(depth, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(depth, axis=[1, 2, 3], keepdims=True)
    residual = tf.minimum(tf.norm(fit["geometric_residual"], axis=-1, keepdims=True) / model.config.tau_geometric, 1.0)
    zeros = tf.zeros_like(maps[..., :1])
    return {
        "input": images,
        "reconstruction": reconstruction,
        "geometry": tf.clip_by_value(geometry, 0.0, 1.0),
        "correspondence": tf.concat([maps[..., 0:2], zeros], -1),
        "confidence": tf.concat([maps[..., 3:5], zeros], -1),
        "depth": tf.tile((depth - low) / tf.maximum(high - low, 1e-6), [1, 1, 1, 3]),
        "residual": tf.tile(scatter_samples(residual, fit["indices"], height, width, background=tf.ones_like(zeros)),
                            [1, 1, 1, 3]),
    }


class ImageSummaries(keras.callbacks.Callback):
    """Writes TensorBoard image panels (:func:`summary_panels`) of fixed images every N steps."""

    def __init__(self, log_dir: str, images: np.ndarray, every: int):
        super().__init__()
        self.images = tf.constant(images, tf.float32)
        self.every = int(every)
        self.writer = tf.summary.create_file_writer(str(log_dir))
        # Compiled, so that a degenerate fit early in training takes the solves' finite graph-mode
        # fallback (an eager solve raises SolveError and would end the run for a picture).
        self._panels = tf.function(lambda images: summary_panels(self.model, images))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every:
            return
        with self.writer.as_default(step=step):
            for name, panel in self._panels(self.images).items():
                tf.summary.image(name, panel, max_outputs=int(self.images.shape[0]))
        self.writer.flush()


def progress_lines(results: dict) -> list[str]:
    """The figures a person watches in a long run, from an evaluation's flat ``results``: the
    real photos' box NME (first annotation; bins mean, failed fits) when evaluated, then the
    synthetic held-out renders' 68-landmark NMEs.

    Returns:
        One string per evaluated set, photos first.
    """
    lines = []
    photos = next((key[:-len("nme")] for key in results if key.startswith("photos/") and key.endswith("/nme")), None)
    if photos is not None:
        details = [f"bins mean {100 * results[photos + 'nme_yaw_mean']:.2f}%"] if photos + "nme_yaw_mean" in results else []
        details.append(f"{int(results.get(photos + 'failed', 0))} failed")
        lines.append(f"dev photos box NME {100 * results[photos + 'nme']:.2f}% ({', '.join(details)})")
    shown = [f"{name} {100 * results[name]:.2f}%" for name in ("nme68", "direct_nme68") if name in results]
    if results.get("failed"):
        shown.append(f"{results['failed']} of {results['count']} fits failed (not in the means)")
    if shown:
        lines.append("synthetic renders " + ", ".join(shown))
    return lines


class PeriodicEvaluation(keras.callbacks.Callback):
    """Runs ``evaluate(model) -> {name: value}`` every N steps; logs to TensorBoard and a list,
    and prints the landmark NMEs (the progress a person watches in a long run).

    Reads held-out ground truth for evaluation only: nothing here feeds the training loss.
    """

    def __init__(self, evaluate: Callable[[keras.Model], dict], every: int, log_dir: str | None = None):
        super().__init__()
        self.evaluate = evaluate
        self.every = int(every)
        self.history: list[dict] = []
        self.writer = tf.summary.create_file_writer(str(log_dir)) if log_dir else None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self.record(step)

    def record(self, step: int) -> dict:
        results = {"step": step, **self.evaluate(self.model)}
        self.history.append(results)
        tqdm.write(f"step {step}: " + "; ".join(progress_lines(results)))
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name, value in results.items():
                    if name != "step":
                        tf.summary.scalar(f"heldout/{name}", value)
            self.writer.flush()
        return results
