"""Unlabelled real face photographs as ``tf.data`` streams in the canonical framing.

Each collection (a folder of JPEG/PNG face photos, e.g. ../shared/data/celeba) comes with its
:class:`tfface.data.framing.PhotoFraming`. Photos are decoded, centre-squared and resized, then
warped once by the collection's framing composed with an optional random similarity (supplement K);
pixels the warp does not cover are filled from another photo of the batch (supplement Fig. 17).
Unreadable files are skipped at scan time; corrupt pixel data is dropped by ``ignore_errors``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfface.data.augment import SimilarityRange, confine_disc, fill_background, random_similarity, transform_batch
from tfface.data.framing import FRAMINGS, PhotoFraming
from tfface.data.images import FolderScan, decode_image, fit_square, scan_image_folder
from tfface.errors import InputError

#: Photos warped together (one background donor each: the previous photo of the group).
GROUP_SIZE = 8


@dataclasses.dataclass(frozen=True)
class PhotoSource:
    """A folder of face photos and how its faces are framed.

    Attributes:
        folder: the folder (read recursively).
        framing: where the collection's average face sits (:data:`tfface.data.framing.FRAMINGS`).
        weight: relative share of this source in a mix of sources.
    """

    folder: Path
    framing: PhotoFraming
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "PhotoSource":
        """``FOLDER[:FRAMING[:WEIGHT]]``, e.g. ``photos/:canonical`` or ``celeba:celeba:2``."""
        folder, _, rest = str(text).partition(":")
        name, _, weight = rest.partition(":")
        name = name or "canonical"
        if name not in FRAMINGS:
            raise InputError(f"unknown photo framing {name!r} in {text!r} (known: {sorted(FRAMINGS)})")
        try:
            share = float(weight) if weight else 1.0
        except ValueError:
            raise InputError(f"bad weight {weight!r} in {text!r}") from None
        if not share > 0:
            raise InputError(f"the weight of a photo source must be positive, got {share}")
        return cls(Path(folder), FRAMINGS[name], share)


def pixel_similarity(unit_matrix: np.ndarray, size: int) -> np.ndarray:
    """A ``(3, 3)`` similarity of unit crop coordinates as one of pixel coordinates at ``size``."""
    scale = np.diag([float(size), float(size), 1.0])
    return (scale @ np.asarray(unit_matrix, np.float64) @ np.linalg.inv(scale)).astype(np.float32)


def _decoded(scan: FolderScan, size: int, seed: int) -> tf.data.Dataset:
    """Endless shuffled ``(size, size, 3)`` centre-squared photos of a scanned folder."""
    paths = tf.data.Dataset.from_tensor_slices(list(scan.files))
    paths = paths.shuffle(len(scan.files), seed=seed, reshuffle_each_iteration=True).repeat()
    return paths.map(lambda path: fit_square(decode_image(tf.io.read_file(path)), size)[0],
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors(log_warning=True)


def photo_dataset(sources: Sequence[PhotoSource], size: int, template5: np.ndarray,
                  ranges: SimilarityRange | None = None, seed: int = 0,
                  seam_radius: float | None = None) -> tf.data.Dataset:
    """Endless unbatched ``(size, size, 3)`` float32 face photos in the canonical framing.

    Args:
        sources: photo folders with their framings; mixed at random by their weights.
        size: output side in pixels.
        template5: ``(5, 2)`` canonical unit positions of the 5 landmarks
            (:func:`tfface.data.framing.template_landmarks5`).
        ranges: random similarity applied after the framing (None: framing only).
        seed: seed of the shuffles, the mix and the random similarities.
        seam_radius: when given, every random similarity is confined
            (:func:`tfface.data.augment.confine_disc`) so that the centred disc of this radius
            (fraction of the side) shows only the photo, never the fill and its seams.

    Returns:
        Dataset of images (RGB in [0, 1]).

    Raises:
        InputError: no source, or a folder without a readable image.
    """
    if not sources:
        raise InputError("no photo source given")
    streams = []
    for index, source in enumerate(sources):
        framing = tf.constant(pixel_similarity(source.framing.to_canonical(template5), size))
        content = tf.constant(source.framing.content_radius(template5), tf.float32)
        streams.append(_decoded(scan_image_folder(source.folder), size, seed + index).map(
            lambda image, framing=framing, content=content: (image, framing, content)))
    weights = np.array([source.weight for source in sources], np.float64)
    mixed = streams[0] if len(streams) == 1 else tf.data.Dataset.sample_from_datasets(
        streams, weights=(weights / weights.sum()).tolist(), seed=seed)

    def frame(step, group):
        images, framings, contents = group
        transforms = framings
        if ranges is not None:
            step_seed = tf.stack([tf.constant(seed, tf.int64), step])
            similarities = random_similarity(step_seed, tf.shape(images)[0], size, size, ranges)
            if seam_radius is not None:
                similarities = confine_disc(similarities, seam_radius, contents, size, size)
            transforms = similarities @ framings
        out = transform_batch({"image": images}, transforms)
        return fill_background(out, tf.roll(images, 1, axis=0))["image"]

    groups = mixed.batch(GROUP_SIZE, drop_remainder=True).enumerate()
    return groups.map(frame, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
