"""Affine warps into square model inputs: pixel-centre convention, anti-aliasing."""

from __future__ import annotations

import numpy as np
import pytest

from tfface.detection import warp
from tfface.errors import InputError


def _ramp(height: int = 100, width: int = 120) -> np.ndarray:
    """Red = 2 x (pixel centre x), green = 2 x (pixel centre y)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = (2 * (np.arange(width) + 0.5)).astype(np.uint8)[None, :]
    image[..., 1] = (2 * (np.arange(height) + 0.5)).astype(np.uint8)[:, None]
    return image


def _sampled_at(matrix: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 2)`` source positions (x, y) of every output pixel centre."""
    grid = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)
    return warp.apply(np.linalg.inv(matrix), grid)


@pytest.mark.parametrize("matrix", [warp.scale_translation(1.5, (3.2, -7.0)),
                                    np.array([[0.9, -0.4, 30.0], [0.4, 0.9, -10.0], [0, 0, 1]])])
def test_warp_samples_at_pixel_centres(matrix):
    image, size = _ramp(), 80
    out = warp.warp(image, matrix, size).astype(np.float64)
    source = _sampled_at(matrix, size)
    inside = ((source >= 1) & (source <= [image.shape[1] - 1, image.shape[0] - 1])).all(-1)
    np.testing.assert_allclose(out[inside][:, :2], 2 * source[inside], atol=1.01)


def test_warp_is_black_outside_the_source():
    out = warp.warp(np.full((20, 20, 3), 200, np.uint8), warp.scale_translation(1.0, (10.0, 10.0)), 40)
    assert out[:9].max() == 0 and out[:, :9].max() == 0 and out[15, 15].min() == 200


def test_downscaling_is_anti_aliased():
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes average to grey
    out = warp.warp(stripes, warp.scale_translation(0.1, (0.0, 0.0)), 40).astype(np.float64)
    assert abs(out[2:-2, 2:-2].mean() - 127.5) < 3 and out[2:-2, 2:-2].std() < 3


@pytest.mark.parametrize("scale", [0.55, 0.7, 0.9])
def test_downscaling_by_less_than_two_is_anti_aliased(scale):
    # A 2:1 to 1:1 shrink, as a face crop of a 450-pixel photo: one-pixel stripes must come out
    # nearly grey, not as the beat pattern plain bilinear sampling leaves (std 72 to 74 here;
    # anti-aliased 1.3, 10.6 and 20.5: the triangle filter damps least just below 1:1).
    stripes = np.zeros((200, 200, 3), np.uint8)
    stripes[:, ::2] = 255
    out = warp.warp(stripes, warp.scale_translation(scale, (0.0, 0.0)), int(190 * scale)).astype(np.float64)
    assert abs(out[2:-2, 2:-2].mean() - 127.5) < 4 and out[2:-2, 2:-2].std() < 25


def test_warp_rejects_singular_matrices():
    with pytest.raises(InputError, match="invertible"):
        warp.warp(_ramp(), np.zeros((3, 3)), 16)
