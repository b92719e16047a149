"""What a training run reads: synthetic renders or real photographs, behind one interface.

:func:`tfface.training.loop.pretrain` and :func:`~tfface.training.loop.train` take a
:class:`TrainingData`:

- :class:`SyntheticData`: the TFRecord folder of :mod:`tfface.training.data` (the test harness:
  renders with ground truth, evaluated on its held-out split);
- :class:`PhotoData`: folders of unlabelled face photos (CelebA and AFLW crops by default),
  pretrained on the aligned collections against the canonical template
  (:mod:`tfface.data.framing`) and evaluated on annotated photos (AFLW2000-3D dev) and, where
  a synthetic folder is at hand, on synthetic held-out renders too, so regressions stay visible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfface.data.annotated import AnnotatedPhotos
from tfface.data.augment import SimilarityRange
from tfface.data.framing import template_landmarks5
from tfface.data.photos import PhotoSource, photo_dataset
from tfface.errors import InputError
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.training import data
from tfface.training.config import TrainConfig
from tfface.training.evaluation import evaluate_batches
from tfface.training.photo_evaluation import evaluate_photos

#: Annotated photos and synthetic renders evaluated by the periodic evaluation of a run.
PERIODIC_PHOTOS, PERIODIC_RENDERS = 200, 100


class TrainingData:
    """The data of a run (see the module docstring); subclasses fill in every method."""

    def aligned_images(self) -> tf.data.Dataset:
        """Unbatched ``(S, S, 3)`` roughly aligned images for pretraining (supplement F)."""
        raise NotImplementedError

    def mean_landmarks5(self) -> np.ndarray:
        """``(5, 2)`` pixel position of the aligned images' average 5 landmarks (one template)."""
        raise NotImplementedError

    def aligned_content_radius(self) -> float:
        """Radius (fraction of the side) of the centred disc that every aligned image shows of
        its photo or render (beyond it: background fill)."""
        raise NotImplementedError

    def training_images(self) -> tf.data.Dataset:
        """Endless unbatched ``(S, S, 3)`` images of the main training (nothing else is read)."""
        raise NotImplementedError

    def preview_images(self, count: int = 4) -> np.ndarray:
        """``(count, S, S, 3)`` images for the TensorBoard panels."""
        raise NotImplementedError

    def evaluator(self, limit: int | None = None) -> Callable[[tf.keras.Model], dict] | None:
        """``model -> {metric: value}`` on held-out ground truth (flat dict), or None.

        Args:
            limit: images evaluated (None: the periodic evaluation's share, see
                :data:`PERIODIC_PHOTOS`).
        """
        raise NotImplementedError


@dataclasses.dataclass
class SyntheticData(TrainingData):
    """The synthetic TFRecord folder (:func:`tfface.training.data.prepare_synthetic_data`)."""

    folder: Path

    def aligned_images(self) -> tf.data.Dataset:
        return data.images(self.folder, "aligned")

    def mean_landmarks5(self) -> np.ndarray:
        return data.mean_landmarks5(self.folder)

    def aligned_content_radius(self) -> float:
        return 0.5  # renders fill their square

    def training_images(self) -> tf.data.Dataset:
        return data.training_images(self.folder)

    def preview_images(self, count: int = 4) -> np.ndarray:
        return next(iter(data.images(self.folder, "heldout").batch(count))).numpy()

    def evaluator(self, limit: int | None = None) -> Callable[[tf.keras.Model], dict]:
        folder, limit = self.folder, limit or PERIODIC_RENDERS
        return lambda model: evaluate_batches(model, data.heldout_batches(folder, 25, limit=limit))


def _flat(prefix: str, tables: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{prefix}{annotation}/{key}": value for annotation, row in tables.items() for key, value in row.items()}


@dataclasses.dataclass
class PhotoData(TrainingData):
    """Real photographs: unlabelled training folders and annotated evaluation photos.

    Attributes:
        sources: the main training's photo folders (mixed by weight).
        aligned: the roughly aligned folders of the pretraining (CelebA in supplement F).
        image_size: network input side.
        template5: ``(5, 2)`` canonical unit positions of the 5 landmarks.
        ranges: random similarity of the main training (supplement K).
        seed: data seed.
        evaluation: annotated photos (canonical crops) for the periodic and final evaluation.
        synthetic: an optional synthetic folder whose held-out split is evaluated beside them.
        synthetic_mix: fraction of the main training's images drawn from that folder's training
            renders (:attr:`TrainConfig.synthetic_mix`).
        seam_radius: radius of the centred disc kept free of fill seams in the main training
            (:meth:`TrainConfig.seam_radius`); None: not confined.
    """

    sources: Sequence[PhotoSource]
    aligned: Sequence[PhotoSource]
    image_size: int
    template5: np.ndarray
    ranges: SimilarityRange
    seed: int = 0
    evaluation: AnnotatedPhotos | None = None
    synthetic: Path | None = None
    synthetic_mix: float = 0.0
    seam_radius: float | None = None

    def __post_init__(self):
        if not 0.0 <= self.synthetic_mix < 1.0 or (self.synthetic_mix > 0 and self.synthetic is None):
            raise InputError(f"synthetic_mix must be in [0, 1) with a synthetic folder, got {self.synthetic_mix}")

    @classmethod
    def for_config(cls, uv_model: UVMorphableModel, config: TrainConfig, sources: Sequence[PhotoSource],
                   aligned: Sequence[PhotoSource], evaluation: AnnotatedPhotos | None = None,
                   synthetic: Path | None = None) -> "PhotoData":
        """The photo data of a configuration (template from ``uv_model``'s mean face)."""
        if not sources or not aligned:
            raise InputError("training on photos needs at least one photo folder (--images DIR)")
        return cls(tuple(sources), tuple(aligned), config.image_size, template_landmarks5(uv_model.model),
                   config.photo_ranges(), config.seed, evaluation, synthetic, config.synthetic_mix, config.seam_radius())

    def aligned_images(self) -> tf.data.Dataset:
        return photo_dataset(self.aligned, self.image_size, self.template5, seed=self.seed)

    def mean_landmarks5(self) -> np.ndarray:
        return (self.template5 * self.image_size).astype(np.float32)

    def aligned_content_radius(self) -> float:
        return min(source.framing.content_radius(self.template5) for source in self.aligned)

    def training_images(self) -> tf.data.Dataset:
        photos = photo_dataset(self.sources, self.image_size, self.template5, self.ranges, self.seed,
                               self.seam_radius)
        if not self.synthetic_mix:
            return photos
        renders = data.training_images(self.synthetic)
        return tf.data.Dataset.sample_from_datasets([photos, renders], [1.0 - self.synthetic_mix, self.synthetic_mix],
                                                    seed=self.seed)

    def preview_images(self, count: int = 4) -> np.ndarray:
        if self.evaluation is not None:  # shown, never trained on
            index = np.linspace(0, len(self.evaluation) - 1, count).round().astype(int)
            return self.evaluation.images[index].astype(np.float32) / 255.0
        return next(iter(photo_dataset(self.sources, self.image_size, self.template5).batch(count))).numpy()

    def evaluator(self, limit: int | None = None) -> Callable[[tf.keras.Model], dict] | None:
        if self.evaluation is None and self.synthetic is None:
            return None
        photos, limit = self.evaluation, limit or PERIODIC_PHOTOS
        if photos is not None and limit is not None and limit < len(photos):
            photos = photos.subset(np.linspace(0, len(photos) - 1, limit).round().astype(int))
        synthetic = None if self.synthetic is None else SyntheticData(self.synthetic).evaluator()

        def evaluate(model) -> dict:
            results = {}
            if photos is not None:
                results.update(_flat("photos/", evaluate_photos(model, photos)))
                first = next(iter(photos.annotations))
                tqdm.write(f"  real photos ({len(photos)}): box NME {100 * results[f'photos/{first}/nme']:.2f}%"
                           + (f", yaw-bin mean {100 * results[f'photos/{first}/nme_yaw_mean']:.2f}%"
                              if f"photos/{first}/nme_yaw_mean" in results else "")
                           + f", failed {results[f'photos/{first}/failed']}")
            if synthetic is not None:
                results.update(synthetic(model))
            return results

        return evaluate
