"""Left-right symmetry of a morphable model's mesh.

A face model's mean shape is (nearly) symmetric about a plane ``x = c`` (model space: +x to the
subject's left, +y up, +z out of the face). Its *mirror partners* pair every vertex with the vertex
nearest to its reflection; the default ICT face is symmetric to 0.05 mm, every vertex its partner's
exact image. Partners map a correspondence into the flattened model's UV space to the
correspondence of the mirrored face (:func:`tfface.flip_test.mirror_maps`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from tfface.errors import ModelFileError

#: Largest distance (mm) between a reflected vertex and its partner that still counts as symmetric.
SYMMETRY_TOLERANCE_MM = 2.0


def mirror_partners(mean: np.ndarray, tolerance: float = SYMMETRY_TOLERANCE_MM) -> np.ndarray:
    """The vertex nearest to each vertex's reflection about the mean's plane of symmetry.

    The plane is ``x = c`` with ``c`` the mean ``x`` of the vertices (exact for a symmetric mesh).

    Args:
        mean: ``(V, 3)`` mean shape (mm).
        tolerance: largest allowed distance (mm) between a reflected vertex and its partner.

    Returns:
        ``(V,)`` int32 partner of every vertex (an involution on a symmetric mesh).

    Raises:
        ModelFileError: if the mean is not ``(V, 3)`` or some vertex has no partner within ``tolerance``
            (the model is not left-right symmetric).
    """
    mean = np.asarray(mean, np.float64)
    if mean.ndim != 2 or mean.shape[1] != 3 or len(mean) == 0:
        raise ModelFileError(f"mean shape must be (V, 3), got {mean.shape}")
    reflected = mean.copy()
    reflected[:, 0] = 2.0 * mean[:, 0].mean() - mean[:, 0]
    distance, partners = cKDTree(mean).query(reflected)
    if distance.max() > tolerance:
        raise ModelFileError(f"the model is not left-right symmetric: a reflected vertex lies "
                             f"{distance.max():.2f} mm from the nearest vertex (tolerance {tolerance} mm); "
                             "the flip test needs a symmetric model: set inference_flip_test to false")
    return partners.astype(np.int32)
