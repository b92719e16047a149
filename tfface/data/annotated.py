"""Real photographs with ground-truth 68 landmarks, cropped the canonical way for evaluation.

Two layouts are read:

- the AFLW2000-3D dev folder of ../shared/data (``images/NAME.jpg`` and ``landmarks.npz`` with
  ``names``, ``landmarks68``, ``landmarks68_original`` and ``yaw_pitch_roll_degrees``);
- any folder of photos with iBUG ``.pts`` files beside them (68 ``x y`` lines between braces).

Each face is cropped by :func:`tfface.data.framing.landmark_crop` of its (first) annotation and
resized to the network's size; the crop is kept so predictions map back to photo pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from tfface.data.framing import landmark_crop
from tfface.data.images import IMAGE_EXTENSIONS
from tfface.errors import InputError
from tfface.io.images import read_image


@dataclasses.dataclass(frozen=True)
class AnnotatedPhotos:
    """Canonical crops of annotated photos.

    Attributes:
        names: ``(N,)`` photo names.
        images: ``(N, S, S, 3)`` uint8 crops.
        crops: ``(N, 3)`` ``(x0, y0, side)`` of each crop in photo pixels.
        annotations: name -> ``(N, 68, 2)`` ground-truth landmarks in photo pixels; the first
            one framed the crops.
        yaw: ``(N,)`` head yaw in degrees, or None when unknown.
    """

    names: np.ndarray
    images: np.ndarray
    crops: np.ndarray
    annotations: dict[str, np.ndarray]
    yaw: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def to_photo(self, points: np.ndarray, index: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Map ``(n, P, 2)`` crop-pixel points of the selected crops to photo pixels."""
        crops = self.crops[index]
        size = self.images.shape[1]
        return np.asarray(points) * (crops[:, None, 2:3] / size) + crops[:, None, :2]

    def to_crop(self, points: np.ndarray, index: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Map ``(n, P, 2)`` photo-pixel points to crop pixels of the selected crops (inverse of
        :meth:`to_photo`)."""
        crops = self.crops[index]
        size = self.images.shape[1]
        return (np.asarray(points) - crops[:, None, :2]) * (size / crops[:, None, 2:3])

    def subset(self, index: np.ndarray | slice) -> "AnnotatedPhotos":
        """The photos at ``index``."""
        return AnnotatedPhotos(self.names[index], self.images[index], self.crops[index],
                               {k: v[index] for k, v in self.annotations.items()},
                               None if self.yaw is None else self.yaw[index])


def crop_photo(photo: np.ndarray, crop: np.ndarray, size: int) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 square ``crop = (x0, y0, side)`` of an RGB photo; parts
    outside the photo are black (as PIL crops them)."""
    x0, y0, side = (float(v) for v in crop)
    box = tuple(int(round(v)) for v in (x0, y0, x0 + side, y0 + side))
    image = Image.fromarray(photo).crop(box).resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(image)


def _crops_of(photos: list[np.ndarray], landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    crops = landmark_crop(landmarks)
    # crop_photo rounds the box: keep the rounded one so that mapping back is exact
    rounded = np.round(np.concatenate([crops[:, :2], crops[:, :2] + crops[:, 2:]], -1))
    crops = np.concatenate([rounded[:, :2], rounded[:, 2:3] - rounded[:, :1]], -1)
    images = np.stack([crop_photo(photo, crop, size) for photo, crop in zip(photos, crops)])
    return images, crops


def load_aflw2000_dev(folder: str | Path, size: int, limit: int | None = None) -> AnnotatedPhotos:
    """The AFLW2000-3D dev half (``../shared/data/aflw2000-3d-dev``), cropped canonically.

    Args:
        folder: the folder holding ``images/`` and ``landmarks.npz``.
        size: crop side in pixels (the network's input size).
        limit: read only the first N photos (after sorting by name, as stored).

    Raises:
        InputError: missing or malformed files.
    """
    folder = Path(folder)
    path = folder / "landmarks.npz"
    if not path.is_file():
        raise InputError(f"no landmarks.npz in {folder}: not an AFLW2000-3D dev folder")
    with np.load(path) as data:
        missing = {"names", "landmarks68", "landmarks68_original", "yaw_pitch_roll_degrees"} - set(data.files)
        if missing:
            raise InputError(f"{path} lacks {sorted(missing)}")
        names = data["names"][:limit]
        annotations = {key: data[key][:limit].astype(np.float64) for key in ("landmarks68", "landmarks68_original")}
        yaw = data["yaw_pitch_roll_degrees"][:limit, 0].astype(np.float64)
    photos = [read_image(folder / "images" / f"{name}.jpg") for name in names]
    images, crops = _crops_of(photos, annotations["landmarks68"], size)
    return AnnotatedPhotos(np.asarray(names), images, crops, annotations, yaw)


def read_pts(path: str | Path) -> np.ndarray:
    """``(68, 2)`` points of an iBUG ``.pts`` file (``version``, ``n_points: 68``, ``{``, 68 lines
    of ``x y``, ``}``)."""
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    try:
        start, end = lines.index("{"), lines.index("}")
        points = np.array([[float(v) for v in line.split()[:2]] for line in lines[start + 1:end]])
    except (ValueError, IndexError) as error:
        raise InputError(f"{path} is not an iBUG .pts file: {error}") from None
    if points.shape != (68, 2):
        raise InputError(f"{path} holds {len(points)} points, need 68")
    return points


def load_pts_folder(folder: str | Path, size: int) -> AnnotatedPhotos:
    """Every photo of ``folder`` with a ``.pts`` file of the same stem, cropped canonically.

    Raises:
        InputError: no photo with a ``.pts`` file.
    """
    folder = Path(folder)
    pairs = sorted((p, p.with_suffix(".pts")) for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_EXTENSIONS and p.with_suffix(".pts").is_file())
    if not pairs:
        raise InputError(f"no photo with a .pts file beside it in {folder}")
    landmarks = np.stack([read_pts(pts) for _, pts in pairs])
    images, crops = _crops_of([read_image(photo) for photo, _ in pairs], landmarks, size)
    return AnnotatedPhotos(np.array([p.stem for p, _ in pairs]), images, crops, {"landmarks68": landmarks})


def load_annotated(folder: str | Path, size: int, limit: int | None = None) -> AnnotatedPhotos:
    """An AFLW2000-3D dev folder (with ``landmarks.npz``) or a ``.pts`` folder."""
    if (Path(folder) / "landmarks.npz").is_file():
        return load_aflw2000_dev(folder, size, limit)
    photos = load_pts_folder(folder, size)
    return photos if limit is None else photos.subset(slice(0, limit))
