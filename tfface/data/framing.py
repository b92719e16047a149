"""The face crop the network sees, and how photo collections are brought to it.

The network is trained and evaluated on one *canonical framing*: the square of side
``FRAMING_SCALE`` times the longer side of the 68-landmark bounding box, centred on that box
(the AFLW2000-3D protocol of 3DDFA and its successors, with the usual enlargement of 1.5).
Evaluation crops real photographs this way from their ground-truth landmarks; training photos,
which carry no landmark, are brought to it by one fixed similarity per collection
(:class:`PhotoFraming`), the "roughly aligned" of supplement F: a collection-wide average, never a
per-image label.

Positions are in *unit* crop coordinates: ``(0, 0)`` top-left, ``(1, 1)`` bottom-right of the
square (pixel coordinates divided by the side; pixel centres at +0.5 as everywhere).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfface.errors import InputError
from tfface.morphable.model import MorphableModel, landmarks5_from_68

#: Crop side in units of the longer side of the 68-landmark bounding box.
FRAMING_SCALE = 1.5


def landmark_crop(points68: np.ndarray, scale: float = FRAMING_SCALE) -> np.ndarray:
    """The canonical square crop of faces with 68 landmarks.

    Args:
        points68: ``(..., 68, 2)`` landmark pixels (x, y).
        scale: crop side over the longer side of the landmarks' bounding box.

    Returns:
        ``(..., 3)`` float64 ``(x0, y0, side)``: the crop's top-left corner and side in pixels.
    """
    points68 = np.asarray(points68, np.float64)
    if points68.shape[-2:] != (68, 2):
        raise InputError(f"landmarks must be (..., 68, 2), got {points68.shape}")
    low, high = points68.min(-2), points68.max(-2)
    side = scale * (high - low).max(-1)
    corner = (low + high) / 2 - side[..., None] / 2
    return np.concatenate([corner, side[..., None]], -1)


def template_landmarks68(model: MorphableModel, scale: float = FRAMING_SCALE) -> np.ndarray:
    """``(68, 2)`` unit positions of the mean face's landmarks, seen from the front (orthographic,
    +y up becomes image y down) and framed canonically: where an average frontal face's
    landmarks fall in a canonical crop."""
    flat = model.mean[model.landmarks68][:, :2] * np.array([1.0, -1.0])
    x0, y0, side = landmark_crop(flat, scale)
    return ((flat - [x0, y0]) / side).astype(np.float32)


def fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares 2D similarity (rotation, uniform scale, translation) taking ``source``
    points onto ``target`` points (Umeyama's closed form, without reflection).

    Args:
        source, target: ``(N, 2)`` corresponding points, N >= 2.

    Returns:
        ``(3, 3)`` float64 forward matrix ``A`` with ``A [p, 1] ~ [target, 1]``.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise InputError(f"need two (N >= 2, 2) point sets, got {source.shape} and {target.shape}")
    ms, mt = source.mean(0), target.mean(0)
    s, t = source - ms, target - mt
    variance = float((s ** 2).sum())
    if variance <= 0:
        raise InputError("source points coincide: no similarity is defined")
    # complex-number form: target ~ z * source with z = a + ib
    a = float((s[:, 0] * t[:, 0] + s[:, 1] * t[:, 1]).sum()) / variance
    b = float((s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum()) / variance
    linear = np.array([[a, -b], [b, a]])
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = linear, mt - linear @ ms
    return matrix


@dataclasses.dataclass(frozen=True)
class PhotoFraming:
    """Where an average face of a photo collection sits in its (centre-square) photos.

    Attributes:
        name: collection name.
        landmarks5: ``(5, 2)`` unit positions of the collection's average eye centres, nose tip
            and mouth corners (the 5-landmark convention of
            :func:`tfface.morphable.model.landmarks5_from_68`), read once off the collection's
            mean image; ``None`` when only the box framing below is known.
        box_scale: for collections framed by a face box instead: crop side over the longer
            side of the 68-landmark box (``FRAMING_SCALE`` for canonical crops).
    """

    name: str
    landmarks5: tuple[tuple[float, float], ...] | None = None
    box_scale: float = FRAMING_SCALE

    def to_canonical(self, template5: np.ndarray) -> np.ndarray:
        """``(3, 3)`` similarity from this collection's unit crop coordinates to canonical ones.

        Args:
            template5: ``(5, 2)`` canonical unit positions of the 5 landmarks
                (:func:`template_landmarks68` reduced by ``landmarks5_from_68``).
        """
        if self.landmarks5 is not None:
            return fit_similarity(np.array(self.landmarks5), template5)
        zoom = self.box_scale / FRAMING_SCALE  # a box framed looser shows the face smaller
        return np.array([[zoom, 0, 0.5 - 0.5 * zoom], [0, zoom, 0.5 - 0.5 * zoom], [0, 0, 1.0]])

    def content_radius(self, template5: np.ndarray) -> float:
        """Radius (unit) of the largest disc about the canonical centre that the collection's
        (centre-square) photos cover once framed: beyond it a canonical crop may show fill.

        Args:
            template5: as for :meth:`to_canonical`.
        """
        corners = (self.to_canonical(template5) @ np.array([[0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]]))[:2].T
        edges = np.roll(corners, -1, axis=0) - corners
        normals = np.stack([-edges[:, 1], edges[:, 0]], -1) / np.linalg.norm(edges, axis=-1, keepdims=True)
        return float(np.abs(((0.5 - corners) * normals).sum(-1)).min())


#: CelebA's face-centred crops (../shared/data/celeba): eyes level at 43% of the height and 24% of
#: the width apart, read off the mean of 500 of them (BUILD.md, "Real photographs").
CELEBA = PhotoFraming("celeba", landmarks5=((0.38, 0.43), (0.62, 0.43), (0.50, 0.56), (0.41, 0.675),
                                             (0.59, 0.675)))
#: AFLW's face crops (../shared/data/aflw-crops): a little tighter than canonical (eye-to-mouth
#: distance of frontal faces about 1.05 times the template's, by eye on a contact sheet).
AFLW_CROPS = PhotoFraming("aflw-crops", box_scale=1.4)
#: Photos already cropped canonically (e.g. by :func:`landmark_crop`).
CANONICAL = PhotoFraming("canonical")

#: Framings by name (``tfface train --images DIR:NAME``).
FRAMINGS = {framing.name: framing for framing in (CELEBA, AFLW_CROPS, CANONICAL)}


def template_landmarks5(model: MorphableModel, scale: float = FRAMING_SCALE) -> np.ndarray:
    """``(5, 2)`` canonical unit positions of the 5 landmarks (from :func:`template_landmarks68`)."""
    return landmarks5_from_68(template_landmarks68(model, scale)).astype(np.float32)
