"""A contact sheet of annotated photos with what the model makes of them.

Each cell is the six-tile panel of :func:`tfface.visualize.panel` (input, reconstruction,
geometry, correspondence, depth, confidence) of one canonical crop, with the ground-truth
68 landmarks (red) and the fitted ones (green) drawn over the input tile. The photos are spread
over head yaw, so one sheet shows frontal faces and profiles alike::

    tfface evaluate --model savedmodel/tfface_ict/20 --sheet docs/dev_sheet.png
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from tfface.data.annotated import AnnotatedPhotos
from tfface.data.sheet import draw_dots
from tfface.errors import InputError
from tfface.visualize import panel

if TYPE_CHECKING:
    from tfface.export import ExportedModel, KerasInference

#: Colours (RGB) of the ground-truth and the fitted landmarks.
TRUTH_COLOUR = (255, 40, 40)
FIT_COLOUR = (40, 255, 60)


def spread_over_yaw(photos: AnnotatedPhotos, count: int = 16) -> np.ndarray:
    """``(count,)`` indices of photos evenly spaced in ``|yaw|`` (in file order without yaw)."""
    if not 0 < count <= len(photos):
        raise InputError(f"a sheet of {count} photos needs 1 to {len(photos)} photos")
    order = np.arange(len(photos)) if photos.yaw is None else np.argsort(np.abs(photos.yaw), kind="stable")
    return order[np.round(np.linspace(0, len(photos) - 1, count)).astype(int)]


def photo_sheet(run: ExportedModel | KerasInference, photos: AnnotatedPhotos, indices: np.ndarray, columns: int = 4,
                tile_size: int = 128) -> Image.Image:
    """The sheet of the selected photos as an RGB image.

    Args:
        run: an exported model (:class:`tfface.export.ExportedModel`) or
            :class:`tfface.export.KerasInference`: uint8 crops in, outputs with ``mesh``.
        photos: annotated photos; their first annotation is drawn in red.
        indices: ``(N,)`` photos to show, e.g. :func:`spread_over_yaw`.
        columns: panels per row.
        tile_size: side of each panel tile in pixels (a panel is 3 x 2 tiles).

    Returns:
        ``rows * 2 tile_size`` by ``columns * 3 tile_size`` pixels; cells without a photo are black.
    """
    indices = np.asarray(indices)
    if columns <= 0 or len(indices) == 0:
        raise InputError(f"a sheet needs photos and a positive column count, got {len(indices)} and {columns}")
    size = photos.images.shape[1]
    truth = photos.to_crop(next(iter(photos.annotations.values()))[indices], indices)
    outputs = run(photos.images[indices])
    valid = np.asarray(outputs.get("fit_valid", np.ones(len(indices))), bool).reshape(-1)
    rows = -(-len(indices) // columns)
    sheet = Image.new("RGB", (columns * 3 * tile_size, rows * 2 * tile_size))
    for k, index in enumerate(indices):
        cell = Image.fromarray(panel(photos.images[index], outputs, k, run.mesh.triangles, bool(valid[k]), tile_size))
        draw = ImageDraw.Draw(cell)
        draw_dots(draw, truth[k] * (tile_size / size), TRUTH_COLOUR)
        if valid[k]:
            draw_dots(draw, outputs["landmarks68"][k] * (tile_size / size), FIT_COLOUR)
        row, column = divmod(k, columns)
        sheet.paste(cell, (column * 3 * tile_size, row * 2 * tile_size))
    return sheet
