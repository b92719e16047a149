"""Judging face detections against annotated landmarks (e.g. the AFLW2000-3D dev photos).

A detection *finds* an annotated face when its box encloses at least :data:`MIN_ENCLOSED` of the
face's 68 landmarks and the box's longer side lies within :data:`SIZE_RANGE` times that of the
landmarks' bounding box (a box around the whole picture encloses every landmark but finds
nothing). Of several such detections the one enclosing most landmarks is the match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfface.detection.blazeface import Detection
from tfface.errors import InputError
from tfface.io.images import read_image
from tfface.training.photo_evaluation import YAW_BINS

#: Least share of a face's landmarks its detection box must enclose.
MIN_ENCLOSED = 0.5
#: Allowed ratio of the detection box's longer side to the landmark box's longer side.
SIZE_RANGE = (0.5, 2.0)


def enclosed_share(box: np.ndarray, points: np.ndarray) -> float:
    """Share of ``(P, 2)`` points inside the ``(4,)`` box (x0, y0, x1, y1), edges included."""
    points = np.asarray(points, np.float64)
    return float(((points >= box[:2]) & (points <= box[2:])).all(axis=-1).mean())


def match(detections: Sequence[Detection], points: np.ndarray) -> Detection | None:
    """The detection that finds the face with landmarks ``points`` ``(P, 2)``, or None.

    Args:
        detections: detections of the picture (any order).
        points: the face's annotated landmarks, picture pixels.
    """
    points = np.asarray(points, np.float64)
    size = float((points.max(0) - points.min(0)).max())
    candidates = [(enclosed_share(d.box, points), d.score, i) for i, d in enumerate(detections)
                  if SIZE_RANGE[0] * size <= d.size <= SIZE_RANGE[1] * size]
    share, _, best = max(candidates, default=(0.0, 0.0, -1))
    return detections[best] if share >= MIN_ENCLOSED else None


def yaw_bin_masks(yaw: np.ndarray) -> dict[str, np.ndarray]:
    """``"[0,30)"`` ... ``"[60,90]"`` -> boolean masks of ``(N,)`` yaw angles (degrees, sign ignored)."""
    yaw = np.abs(np.asarray(yaw, np.float64))
    return {f"[{low:.0f},{high:.0f}{']' if high >= 90 else ')'}": (yaw >= low) & ((yaw <= high) if high >= 90 else (yaw < high))
            for low, high in YAW_BINS}


def found_by_yaw(found: np.ndarray, yaw: np.ndarray) -> dict[str, tuple[float, int]]:
    """Share of faces found per yaw bin and overall.

    Args:
        found: ``(N,)`` whether each face was found.
        yaw: ``(N,)`` its yaw in degrees.

    Returns:
        bin label (and ``"all"``) -> (share found in [0, 1], number of faces in the bin).
    """
    found = np.asarray(found, bool)
    masks = {**yaw_bin_masks(yaw), "all": np.ones(len(found), bool)}
    return {label: (float(found[mask].mean()) if mask.any() else float("nan"), int(mask.sum()))
            for label, mask in masks.items()}


@dataclasses.dataclass(frozen=True)
class DevPictures:
    """Whole annotated pictures of an AFLW2000-3D dev folder.

    Attributes:
        names: ``(N,)`` picture names.
        pictures: N ``(H, W, 3)`` uint8 pictures.
        annotations: annotation name -> ``(N, 68, 2)`` landmarks in picture pixels
            (``landmarks68`` first: the 3DDFA re-annotation).
        yaw: ``(N,)`` head yaw in degrees.
    """

    names: np.ndarray
    pictures: list[np.ndarray]
    annotations: dict[str, np.ndarray]
    yaw: np.ndarray

    @property
    def landmarks(self) -> np.ndarray:
        """``(N, 68, 2)`` the first annotation."""
        return next(iter(self.annotations.values()))


def load_dev_pictures(folder: str | Path, limit: int | None = None) -> DevPictures:
    """The whole pictures of an AFLW2000-3D dev folder (``images/``, ``landmarks.npz``).

    Args:
        folder: the dev folder.
        limit: read only the first N pictures (by name, as stored).

    Raises:
        InputError: no ``landmarks.npz`` in the folder.
    """
    folder = Path(folder)
    if not (folder / "landmarks.npz").is_file():
        raise InputError(f"no landmarks.npz in {folder}: not an AFLW2000-3D dev folder")
    with np.load(folder / "landmarks.npz") as data:
        names = data["names"][:limit]
        annotations = {key: data[key][:limit].astype(np.float64) for key in ("landmarks68", "landmarks68_original")
                       if key in data.files}
        yaw = data["yaw_pitch_roll_degrees"][:limit, 0].astype(np.float64)
    return DevPictures(names, [read_image(folder / "images" / f"{name}.jpg") for name in names], annotations, yaw)


def tiled_scene(pictures: Sequence[np.ndarray], seed: int = 0, cell: int = 400,
                scale_range: tuple[float, float] = (0.5, 0.8)) -> tuple[np.ndarray, list[np.ndarray]]:
    """A multi-face test picture: 2-4 pictures shrunk and placed in a 2 x 2 grid over clutter.

    The canvas is grey noise under random coloured rectangles and ellipses; each picture is
    scaled by a random factor in ``scale_range`` (Pillow, anti-aliased) and pasted at a random
    place inside its cell.

    Args:
        pictures: 2 to 4 ``(H, W, 3)`` uint8 pictures.
        seed: random seed of the clutter, scales and places.
        cell: grid cell side in pixels (the canvas is ``2 cell`` square).
        scale_range: range of the pictures' scale factors.

    Returns:
        The ``(2 cell, 2 cell, 3)`` uint8 canvas and, per picture, the ``(3, 3)`` map of its
        pixels into the canvas's.
    """
    from PIL import Image, ImageDraw

    from tfface.detection.warp import scale_translation

    if not 2 <= len(pictures) <= 4:
        raise InputError(f"a tiled scene takes 2 to 4 pictures, got {len(pictures)}")
    rng = np.random.default_rng(seed)
    canvas = Image.fromarray(rng.normal(128, 30, (2 * cell, 2 * cell, 3)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(40):
        x, y = rng.uniform(0, 2 * cell, 2)
        w, h = rng.uniform(10, cell / 2, 2)
        shape = draw.rectangle if rng.uniform() < 0.5 else draw.ellipse
        shape([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    matrices = []
    for i, picture in enumerate(pictures):
        scale = rng.uniform(*scale_range) * cell / max(picture.shape[:2])
        size = (round(picture.shape[1] * scale), round(picture.shape[0] * scale))
        corner = np.array([i % 2, i // 2]) * cell + rng.uniform(0, 1, 2) * (cell - np.array(size))
        corner = np.floor(corner).astype(int)
        canvas.paste(Image.fromarray(picture).resize(size, Image.Resampling.BILINEAR), tuple(int(v) for v in corner))
        matrices.append(scale_translation(1.0, corner) @ scale_translation(size[0] / picture.shape[1], (0.0, 0.0)))
    return np.asarray(canvas), matrices
