"""Every face drawn over the whole original picture: detector box, fitted mesh and 68 landmarks.

Used for the overlay image of a photo and for each frame of the overlay video of
``tfface reconstruct``. A face whose fit is valid shows its projected mesh (a light veil of
vertex dots), its 68 landmarks (green) and its box with a label; a face the detector found but
the model could not fit shows its box in red only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: Colours (RGB).
LANDMARK_COLOUR, MESH_COLOUR, BOX_COLOUR, FAILED_COLOUR = (40, 255, 60), (120, 200, 255), (255, 210, 0), (255, 40, 40)
#: At most this many mesh vertices are drawn per face (evenly spaced through the vertex list).
MESH_POINTS = 2500
#: Opacity of the mesh veil.
MESH_OPACITY = 0.45


@dataclasses.dataclass(frozen=True)
class FaceDrawing:
    """What to draw of one face, in picture pixels.

    Attributes:
        box: ``(4,)`` x0, y0, x1, y1 (its width sets the line and dot sizes), or None.
        label: text beside the box (e.g. ``"0  det 0.92  face 0.41"``).
        landmarks68: ``(68, 2)`` landmarks, or None (no valid fit).
        mesh2d: ``(V, 2)`` projected mesh vertices, or None.
    """

    box: np.ndarray | None
    label: str = ""
    landmarks68: np.ndarray | None = None
    mesh2d: np.ndarray | None = None


def _veil(canvas: np.ndarray, points: np.ndarray) -> None:
    """Blend mesh dots (2 x 2 pixels) into ``canvas`` (float, in place)."""
    step = max(1, len(points) // MESH_POINTS)
    pixels = np.floor(points[::step]).astype(np.int64)
    height, width = canvas.shape[:2]
    for dy in (0, 1):
        for dx in (0, 1):
            x, y = pixels[:, 0] + dx, pixels[:, 1] + dy
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            x, y = x[inside], y[inside]
            canvas[y, x] = (1 - MESH_OPACITY) * canvas[y, x] + MESH_OPACITY * np.array(MESH_COLOUR, np.float64)


def draw_faces(picture: np.ndarray, faces: Sequence[FaceDrawing]) -> np.ndarray:
    """The picture with every face drawn over it.

    Args:
        picture: ``(H, W, 3)`` uint8 RGB.
        faces: the faces.

    Returns:
        ``(H, W, 3)`` uint8 RGB copy with the drawings.
    """
    canvas = np.asarray(picture, np.float64).copy()
    for face in faces:
        if face.mesh2d is not None:
            _veil(canvas, np.asarray(face.mesh2d, np.float64))
    image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for face in faces:
        fitted = face.landmarks68 is not None
        points = None if not fitted else np.asarray(face.landmarks68, np.float64)
        size = float(face.box[2] - face.box[0]) if face.box is not None else float(np.ptp(points, axis=0).max())
        if face.box is not None:
            box = [float(v) for v in face.box]
            line = max(1, round(size / 100))
            draw.rectangle(box, outline=BOX_COLOUR if fitted else FAILED_COLOUR, width=line)
            if face.label:
                draw.text((box[0] + 2, box[1] - 12 if box[1] >= 12 else box[3] + 2), face.label,
                          fill=BOX_COLOUR if fitted else FAILED_COLOUR)
        if fitted:
            radius = max(1.5, size / 90)
            for x, y in points:
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=LANDMARK_COLOUR)
    return np.asarray(image)
