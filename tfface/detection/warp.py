"""Affine warps of pictures into square model inputs, and the matrices that describe them.

Every warp here is given by a ``(3, 3)`` homogeneous matrix ``A`` taking *source* pixel
coordinates to *output* pixel coordinates (x right, y down, pixel centres at +0.5, as everywhere
in tfface), so a point found in the output maps back to the source by ``A^-1``
(:func:`apply`). Downscaling warps are anti-aliased as the training photos are (decoded and
resized with an anti-aliasing filter, :func:`tfface.data.images.fit_square`): the source is first
reduced by the whole factor that keeps at least two source pixels per output pixel (box filter),
then, while the map still shrinks, warped bilinearly at twice the output size and resized to it
with Pillow's anti-aliased bilinear (triangle) filter. Outside the source the output is black.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from tfface.errors import InputError


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(..., 2)`` points by the homogeneous ``(3, 3)`` affine ``matrix``.

    Args:
        matrix: ``(3, 3)`` affine map (last row ``[0, 0, 1]``).
        points: ``(..., 2)`` pixel coordinates (x, y).

    Returns:
        ``(..., 2)`` float64 mapped coordinates.
    """
    matrix, points = np.asarray(matrix, np.float64), np.asarray(points, np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def scale_translation(scale: float, offset: tuple[float, float] | np.ndarray) -> np.ndarray:
    """``(3, 3)`` matrix of ``x -> scale x + offset``."""
    return np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]], [0.0, 0.0, 1.0]])


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Sample the ``size x size`` output of ``image`` under the source-to-output affine ``matrix``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB source.
        matrix: ``(3, 3)`` source-to-output affine map (e.g. a similarity).
        size: output side in pixels.

    Returns:
        ``(size, size, 3)`` uint8; black where the output falls outside the source.
    """
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise InputError(f"warp needs a finite, invertible (3, 3) affine matrix, got {matrix}")
    source = Image.fromarray(np.ascontiguousarray(image))
    # output pixels per source pixel (geometric mean of the axes' scales)
    scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    factor = int(1.0 / (2.0 * scale)) if scale < 0.5 else 1
    if factor > 1:  # anti-aliasing: box-reduce first, then the remaining map needs <= 2:1 per axis
        source = source.reduce(factor)
        matrix = matrix @ scale_translation(float(factor), (0.0, 0.0))
    if scale * factor >= 1.0:  # the remaining map no longer shrinks
        return _bilinear(source, matrix, size)
    # Still shrinking: warp at twice the size with a margin of one output pixel all round (so the
    # filter sees whole neighbourhoods at the border), resize anti-aliased, cut the margin off.
    doubled = _bilinear(source, scale_translation(2.0, (2.0, 2.0)) @ matrix, 2 * size + 4)
    resized = Image.fromarray(doubled).resize((size + 2, size + 2), Image.Resampling.BILINEAR)
    return np.asarray(resized, np.uint8)[1:-1, 1:-1]


def _bilinear(source: Image.Image, matrix: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 bilinear samples of ``source`` under the source-to-output ``matrix``."""
    inverse = np.linalg.inv(matrix)
    warped = source.transform((size, size), Image.Transform.AFFINE, data=tuple(inverse[:2].ravel()),
                              resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(warped, np.uint8)
