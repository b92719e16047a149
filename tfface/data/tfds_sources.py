"""TensorFlow Datasets sources: CelebA (pre-aligned, training) and AFLW2000-3D (evaluation).

Nothing is downloaded here: the datasets must have been prepared into ``data_dir`` beforehand
(``tfds build``); a missing dataset raises :class:`~tfface.errors.InputError` saying how.

Output dicts (images fitted to ``size`` x ``size`` by a centre square crop and resize):

- ``celeb_a_dataset``: ``image`` ``(S, S, 3)`` float32 in [0, 1]; ``landmarks5`` ``(5, 2)``
  float32 pixels in the order of :data:`tfface.morphable.model.LANDMARK5_GROUPS` (eye on the
  image's left, eye on the image's right, nose tip, mouth corner left, mouth corner right).
- ``aflw2k3d_dataset``: ``image`` likewise; ``landmarks68`` ``(68, 2)`` float32 pixels.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from tfface.data.images import fit_square
from tfface.errors import InputError

#: How to prepare each dataset (printed when it is missing).
PREPARE_HINTS = {
    "celeb_a": (
        "tfds build celeb_a --data_dir {data_dir}   (downloads img_align_celeba.zip and the "
        "annotation files from Google Drive; if that download is blocked, fetch them by hand from "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into {data_dir}/downloads/manual and "
        "run the same command with --manual_dir {data_dir}/downloads/manual)"
    ),
    "aflw2k3d": (
        "tfds build aflw2k3d --data_dir {data_dir}   (downloads AFLW2000-3D.zip from "
        "http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/Database/AFLW2000-3D.zip; "
        "if blocked, place that zip in {data_dir}/downloads/manual and pass --manual_dir)"
    ),
}

#: CelebA landmark names in the 5-landmark order of ``LANDMARK5_GROUPS``.
CELEB_A_LANDMARKS = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")


def default_data_dir() -> str:
    """``$TFDS_DATA_DIR`` or TFDS's own default (``~/tensorflow_datasets``)."""
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def load_split(name: str, split: str, data_dir: str | None = None, *, shuffle_files: bool = False) -> tf.data.Dataset:
    """The raw TFDS examples of a prepared dataset.

    Raises:
        InputError: the dataset is not prepared in ``data_dir`` (message says how to prepare it),
            or the split does not exist.
    """
    data_dir = data_dir or default_data_dir()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise InputError(f"unknown TFDS dataset {name!r}: {error}") from None
    splits = builder.info.splits
    base = split.split("[")[0]
    if splits and base not in splits:
        raise InputError(f"{name} has no split {split!r}; available: {sorted(splits)}")
    try:
        return builder.as_dataset(split=split, shuffle_files=shuffle_files)
    except AssertionError:  # TFDS's way of saying "could not find data in data_dir"
        hint = PREPARE_HINTS.get(name, f"tfds build {name} --data_dir {{data_dir}}").format(data_dir=data_dir)
        raise InputError(f"TFDS dataset {name!r} is not prepared in {data_dir}. Prepare it once with:\n  {hint}") from None


def _fit_with_points(image: tf.Tensor, points: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    image = tf.cast(image, tf.float32) / 255.0
    fitted, matrix = fit_square(image, size)
    return fitted, tf.linalg.matvec(matrix[:2, :2], points) + matrix[:2, 2]


def celeb_a_dataset(split: str = "train", size: int = 224, data_dir: str | None = None, *,
                    shuffle_files: bool = False) -> tf.data.Dataset:
    """Pre-aligned CelebA faces with their 5 landmarks (landmarks for evaluation only).

    CelebA's integer landmark coordinates are taken as pixel centres (``+0.5``).
    """
    def convert(example):
        marks = example["landmarks"]
        points = tf.stack([tf.stack([marks[f"{n}_x"], marks[f"{n}_y"]]) for n in CELEB_A_LANDMARKS])
        image, points = _fit_with_points(example["image"], tf.cast(points, tf.float32) + 0.5, size)
        return {"image": image, "landmarks5": points}

    return load_split("celeb_a", split, data_dir, shuffle_files=shuffle_files).map(
        convert, num_parallel_calls=tf.data.AUTOTUNE)


def aflw2k3d_dataset(split: str = "train", size: int = 224, data_dir: str | None = None) -> tf.data.Dataset:
    """AFLW2000-3D images with their 68 landmarks (evaluation; TFDS has only a ``train`` split).

    TFDS stores landmarks normalised by the image size; they are scaled back to continuous
    pixel coordinates of the original image before fitting.
    """
    def convert(example):
        shape = tf.cast(tf.shape(example["image"])[:2], tf.float32)
        points = example["landmarks_68_3d_xy_normalized"] * tf.stack([shape[1], shape[0]])
        image, points = _fit_with_points(example["image"], points, size)
        return {"image": image, "landmarks68": points}

    return load_split("aflw2k3d", split, data_dir).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
