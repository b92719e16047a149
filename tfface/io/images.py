"""Reading and validating images (and video frames) for inference.

Every image becomes ``(H, W, 3)`` uint8 RGB: grey, grey+alpha, palette, CMYK and 16-bit images are
converted, the alpha channel of RGBA images is composited over black. Bad input raises
:class:`~tfface.errors.InputError` with the file name and what was wrong: a missing file, a file
that is not an image, a corrupt or truncated image, an image smaller than
:data:`MIN_SIDE` pixels or larger than :data:`MAX_PIXELS` pixels (Pillow would otherwise decode
it in full; downscale such images first), and float arrays with NaN/inf or values outside [0, 1].

Images of any other size are fitted to the model's square input by :func:`fit_to_square`:
padded (black) to a square around the centre, then resized (bilinear, antialiased); the returned
:class:`SquareFit` maps model pixels back to the original image.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from tfface.errors import InputError

#: Smallest accepted image side in pixels.
MIN_SIDE = 16
#: Largest accepted number of pixels (40 megapixels).
MAX_PIXELS = 40_000_000
#: File endings read as still images from a frame folder (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: File endings treated as videos.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image as ``(H, W, 3)`` uint8 RGB (alpha composited over black)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, np.float64)
        array = np.clip(array / (65535.0 if array.max() > 255 else 255.0), 0, 1)
        return np.repeat((array * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), np.float32)
        return (rgba[..., :3] * (rgba[..., 3:] / 255.0) + 0.5).astype(np.uint8)
    return np.asarray(image.convert("RGB"), np.uint8)


def check_size(width: int, height: int, name: str) -> None:
    """Raise :class:`InputError` for images below :data:`MIN_SIDE` or above :data:`MAX_PIXELS`."""
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name}: image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if width * height > MAX_PIXELS:
        raise InputError(f"{name}: image is {width}x{height} pixels, more than the limit of {MAX_PIXELS:,} "
                         "pixels; downscale it first")


def read_image(path: str | Path) -> np.ndarray:
    """Read one still image as ``(H, W, 3)`` uint8 RGB (see the module docstring for the checks)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_size(image.width, image.height, str(path))
                image.load()
                return _to_rgb(image)
    except UnidentifiedImageError as error:
        raise InputError(f"{path}: not an image file Pillow can read") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{path}: corrupt or truncated image ({error})") from error


def as_rgb_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an in-memory image and return it as ``(H, W, 3)`` uint8 RGB.

    Accepts ``(H, W)``, ``(H, W, 1)`` (grey), ``(H, W, 3)`` and ``(H, W, 4)`` (alpha composited over
    black) arrays of uint8 or of floats in [0, 1].

    Raises:
        InputError: wrong shape, dtype, non-finite values, values out of range, or size limits.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    check_size(array.shape[1], array.shape[0], name)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError(f"{name}: image has NaN or infinite values")
        if array.min() < 0.0 or array.max() > 1.0:
            raise InputError(f"{name}: float image values must lie in [0, 1], got [{array.min():g}, {array.max():g}]")
        array = array.astype(np.float32) * 255.0
    elif array.dtype != np.uint8:
        raise InputError(f"{name}: expected uint8 or float pixels, got {array.dtype}")
    array = array.astype(np.float32)
    if array.shape[-1] == 4:
        array = array[..., :3] * (array[..., 3:] / 255.0)
    elif array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array + 0.5, 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class SquareFit:
    """How an image was fitted to the model input: ``original = model * scale - offset``.

    Attributes:
        scale: original pixels per model pixel.
        offset: ``(2,)`` padding (x, y) added on the left and top of the original, in original pixels.
        size: model input side.
    """

    scale: float
    offset: tuple[float, float]
    size: int

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` model pixel coordinates to original-image pixel coordinates."""
        return np.asarray(points, np.float64) * self.scale - np.asarray(self.offset)

    def matrix(self) -> np.ndarray:
        """``(3, 3)`` homogeneous map from model pixels to original pixels."""
        return np.array([[self.scale, 0.0, -self.offset[0]], [0.0, self.scale, -self.offset[1]], [0.0, 0.0, 1.0]])


def fit_to_square(image: np.ndarray, size: int) -> tuple[np.ndarray, SquareFit]:
    """Pad ``(H, W, 3)`` uint8 to a centred square (black) and resize to ``(size, size, 3)``."""
    height, width = image.shape[:2]
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    square = np.zeros((side, side, 3), np.uint8)
    square[top:top + height, left:left + width] = image
    resized = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))
    return resized, SquareFit(side / size, (float(left), float(top)), size)


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video file by its ending, or a multi-frame GIF/WebP/TIFF."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return True
    if path.suffix.lower() in (".gif", ".webp", ".tif", ".tiff") and path.is_file():
        try:
            with Image.open(path) as image:
                return getattr(image, "n_frames", 1) > 1
        except (OSError, UnidentifiedImageError, ValueError):
            return False
    return False


def frame_folder(folder: str | Path) -> list[Path]:
    """The image files of a frame folder, in name order.

    Raises:
        InputError: if the folder holds no file with an image ending.
    """
    folder = Path(folder)
    frames = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not frames:
        raise InputError(f"{folder}: folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return frames


def read_video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video frame by frame as ``(H, W, 3)`` uint8 RGB.

    Multi-frame GIF/WebP/TIFF are decoded by Pillow; videos (:data:`VIDEO_EXTENSIONS`) by
    FFmpeg's libraries through PyAV (:func:`tfface.io.video.read_frames`, which raises
    :class:`InputError` for missing, empty, corrupt or frameless files).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        from tfface.io.video import read_frames

        yield from read_frames(path)
        return
    try:
        with Image.open(path) as image:
            check_size(image.width, image.height, str(path))
            for frame in ImageSequence.Iterator(image):
                yield _to_rgb(frame)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise InputError(f"{path}: corrupt or unreadable animation ({error})") from error
