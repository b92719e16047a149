"""Training data on disk: synthetic TFRecords generated once, and the datasets read from them.

A data folder holds three TFRecord sets written by :func:`prepare_synthetic_data`:

``train``    synthetic faces for the main training (only the images are read in training),
``heldout``  synthetic faces with ground truth for evaluation (other seed, same distribution),
``aligned``  roughly aligned, near-frontal faces for pretraining (supplement F).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfface.data.synthetic import SynthesisConfig, SyntheticFaces
from tfface.data.tfrecords import read_spec, read_tfrecords, write_tfrecords
from tfface.errors import InputError
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.training.config import TrainConfig

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Data sets of a data folder and the seed offset of each (held-out images never repeat training ones).
SPLITS = {"train": 0, "heldout": 1_000_003, "aligned": 2_000_003}


def synthesis_config(config: TrainConfig, split: str) -> SynthesisConfig:
    """Scene ranges of a split: ``aligned`` is near-frontal, centred and of fixed size."""
    if split == "aligned":
        return SynthesisConfig(image_size=config.image_size, max_yaw=10.0, max_pitch=5.0, max_roll=0.0,
                               face_fraction=(0.62, 0.66), max_shift=0.0, focal_range=(2.0, 2.5))
    return SynthesisConfig(image_size=config.image_size, max_yaw=config.max_yaw, max_pitch=config.max_pitch,
                           max_roll=config.max_roll)


def _count(config: TrainConfig, split: str) -> int:
    return {"train": config.synthetic_count, "heldout": config.heldout_count, "aligned": config.aligned_count}[split]


def prepare_synthetic_data(uv_model: UVMorphableModel, config: TrainConfig, folder: str | Path,
                           splits: Iterable[str] = tuple(SPLITS)) -> Path:
    """Render the synthetic splits to TFRecords under ``folder`` (skips complete ones).

    Returns:
        ``folder`` as a Path.
    """
    folder = Path(folder)
    for split in splits:
        count = _count(config, split)
        try:
            meta = read_spec(folder, split)
            spec_size = meta["features"]["image"]["shape"][0]
            if meta["count"] == count and spec_size == config.image_size:
                continue
        except InputError:
            pass
        faces = SyntheticFaces(uv_model, synthesis_config(config, split))
        source = faces.dataset(count, seed=config.seed + SPLITS[split], batch_size=16)
        with tqdm(total=count, desc=f"synthesise {split}", unit="img", dynamic_ncols=True, mininterval=2.0) as bar:
            write_tfrecords(source, folder, count, prefix=split, progress=bar.update)
    return folder


def images(folder: str | Path, split: str = "train") -> tf.data.Dataset:
    """The ``(H, W, 3)`` images of a split, in file order (nothing else is read)."""
    return read_tfrecords(folder, split).map(lambda example: example["image"])


def training_images(folder: str | Path, split: str = "train") -> tf.data.Dataset:
    """Endless images of a split for ``model.fit`` (unbatched; ground truth dropped).

    Synthetic samples are already independent random scenes, so they are read in file order:
    no shuffle, whose random order would depend on the graph seed of the context building the
    pipeline (e.g. a multi-worker input function), so every worker and run sees the same order.
    """
    return images(folder, split).cache().repeat()


def heldout_batches(folder: str | Path, batch_size: int, split: str = "heldout",
                    limit: int | None = None) -> tf.data.Dataset:
    """Batches of held-out examples with ground truth (for evaluation only)."""
    dataset = read_tfrecords(folder, split)
    if limit is not None:
        dataset = dataset.take(limit)
    return dataset.batch(batch_size)


def mean_landmarks5(folder: str | Path, split: str = "aligned") -> np.ndarray:
    """``(5, 2)`` mean 5-landmark position of the aligned split (the alignment template).

    This plays the role of the known mean landmark position of a pre-aligned data set such as
    CelebA's aligned images: one average for the whole set, never a per-image label.
    """
    total, count = np.zeros((5, 2)), 0
    for batch in read_tfrecords(folder, split).map(lambda e: e["landmarks5"]).batch(256):
        total += batch.numpy().sum(0)
        count += int(batch.shape[0])
    if count == 0:
        raise InputError(f"no {split} images in {folder}")
    return (total / count).astype(np.float32)


def steps_for(count: int, batch_size: int) -> int:
    """Number of full batches in ``count`` examples (at least 1)."""
    return max(1, math.floor(count / batch_size))
