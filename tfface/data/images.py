"""Image decoding, square fitting and folders of images as ``tf.data`` sources.

Images become float32 RGB in ``[0, 1]`` (DESIGN.md): grey images are replicated to three
channels, the alpha channel of RGBA images is dropped. Files that cannot be read as images are
skipped and counted (:class:`FolderScan`), never fatal.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from tfface.errors import InputError

#: File name endings read from image folders (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG bytes to ``(H, W, 3)`` float32 RGB in ``[0, 1]`` (grey and RGBA converted)."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return tf.cast(image, tf.float32) / 255.0


def fit_square(image: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Centre-crop ``(H, W, 3)`` to a square and resize to ``(size, size, 3)`` (bilinear).

    Returns:
        The image and the ``(3, 3)`` float32 similarity mapping input pixel coordinates (centres at
        +0.5) to output ones, for carrying landmarks along.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top:top + side, left:left + side]
    out = tf.image.resize(crop[None], [size, size], method="bilinear", antialias=True)[0]
    scale = tf.cast(size, tf.float32) / tf.cast(side, tf.float32)
    zero = tf.zeros([], tf.float32)
    matrix = tf.stack([
        tf.stack([scale, zero, -scale * tf.cast(left, tf.float32)]),
        tf.stack([zero, scale, -scale * tf.cast(top, tf.float32)]),
        tf.constant([0.0, 0.0, 1.0]),
    ])
    return tf.clip_by_value(out, 0.0, 1.0), matrix


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """The readable images of a folder and the skipped files.

    Attributes:
        files: readable image paths, sorted.
        skipped: ``(path, reason)`` of every file with an image ending that could not be read.
    """

    files: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def _has_jpeg_end(path: Path, tail: int = 64) -> bool:
    """Whether the JPEG end-of-image marker FFD9 is among the last ``tail`` bytes (Pillow's verify
    does not read JPEG scan data, so this catches truncated downloads cheaply)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - tail))
        return b"\xff\xd9" in handle.read()


def scan_image_folder(folder: str | os.PathLike, recursive: bool = True) -> FolderScan:
    """Find the JPEG/PNG files of ``folder`` that Pillow can identify and verify.

    Pillow's ``verify`` checks headers and PNG chunk checksums; JPEGs must also end with the
    end-of-image marker (truncated files are the common corruption).

    Raises:
        InputError: if ``folder`` is not a directory or has no readable image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a directory")
    pattern = "**/*" if recursive else "*"
    candidates = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    files, skipped = [], []
    for path in candidates:
        try:
            with Image.open(path) as image:
                image.verify()
                if image.format == "JPEG" and not _has_jpeg_end(path):
                    raise OSError("truncated JPEG (no end-of-image marker)")
            files.append(str(path))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            skipped.append((str(path), f"{type(error).__name__}: {error}"))
    if not files:
        raise InputError(f"no readable .jpg/.png image in {root} ({len(skipped)} unreadable files skipped)")
    return FolderScan(tuple(files), tuple(skipped))


def image_folder_dataset(folder: str | os.PathLike | FolderScan, size: int, *, shuffle: bool = False,
                         seed: int = 0, recursive: bool = True) -> tuple[tf.data.Dataset, FolderScan]:
    """A dataset of ``{"image": (size, size, 3) float32}`` from a folder of JPEG/PNG files.

    Files Pillow cannot verify are skipped at scan time and listed in the returned
    :class:`FolderScan`; files whose pixel data turns out corrupt when TensorFlow decodes them are
    dropped by ``ignore_errors`` (TensorFlow logs each), so a bad file is never fatal.

    Args:
        folder: the folder, or an existing scan of it.
        size: output side in pixels (centre square crop, then resize).
        shuffle: shuffle file order every epoch (seeded).
        seed: shuffle seed.
        recursive: also read sub-folders.

    Returns:
        ``(dataset, scan)``.
    """
    scan = folder if isinstance(folder, FolderScan) else scan_image_folder(folder, recursive)
    dataset = tf.data.Dataset.from_tensor_slices(list(scan.files))
    if shuffle:
        dataset = dataset.shuffle(len(scan.files), seed=seed, reshuffle_each_iteration=True)

    def load(path):
        image, _ = fit_square(decode_image(tf.io.read_file(path)), size)
        return {"image": image}

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    return dataset.ignore_errors(log_warning=True), scan
