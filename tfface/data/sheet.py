"""Contact sheets: a grid of images with their landmarks drawn, for looking at data."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tfface.errors import InputError

#: Landmark dot colour (RGB) and outline colour.
DOT_COLOUR = (40, 255, 60)
OUTLINE_COLOUR = (0, 0, 0)


def contact_sheet(images: np.ndarray, landmarks: np.ndarray | None = None, columns: int = 4,
                  radius: float = 1.5) -> Image.Image:
    """Tile ``(N, S, S, 3)`` float images in [0, 1] into a grid and draw ``(N, P, 2)`` landmarks.

    Landmarks are in pixel coordinates of each tile (centres at +0.5); each is drawn as a filled
    dot of ``radius`` pixels with a dark outline. Empty grid cells stay black.

    Returns:
        The sheet as an RGB PIL image of ``rows * S`` x ``columns * S`` pixels.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"contact_sheet needs images (N, H, W, 3), got {images.shape}")
    if columns <= 0:
        raise InputError(f"columns must be positive, got {columns}")
    count, height, width = images.shape[:3]
    rows = -(-count // columns)
    grid = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = np.round(np.clip(image, 0, 1) * 255)
    sheet = Image.fromarray(grid)
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float64)
        if landmarks.ndim != 3 or landmarks.shape[0] != count or landmarks.shape[-1] != 2:
            raise InputError(f"landmarks must be ({count}, P, 2), got {landmarks.shape}")
        draw = ImageDraw.Draw(sheet)
        for i, points in enumerate(landmarks):
            r, c = divmod(i, columns)
            draw_dots(draw, points + [c * width, r * height], DOT_COLOUR, radius, OUTLINE_COLOUR)
    return sheet


def draw_dots(draw: ImageDraw.ImageDraw, points: np.ndarray, colour: tuple[int, int, int], radius: float = 1.5,
              outline: tuple[int, int, int] | None = None) -> None:
    """Draw each of ``(P, 2)`` pixel ``points`` as a filled dot of ``radius`` pixels."""
    for x, y in np.asarray(points, np.float64):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=outline)
