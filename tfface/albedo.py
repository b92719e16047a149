"""A documented albedo prior for morphable models without a colour model (DESIGN.md).

No openly licensed 3DMM albedo model exists, so the default model gets a *prior*, not statistics:

* Mean: a uniform skin reflectance :data:`SKIN`, blended towards :data:`LIPS` inside the outer lip
  contour (iBUG landmarks 48-59) and towards :data:`BROWS` near the eyebrow polylines
  (landmarks 17-21 and 22-26), with smooth falloffs (:data:`LIP_SOFTNESS_MM`,
  :data:`BROW_HALF_WIDTH_MM`) computed from distances to those landmarks on the mean shape.
* Modes: smooth spatial functions (the lowest eigenvectors of the mesh's cotangent Laplacian,
  ``scipy.sparse.linalg.eigsh``, normalised to unit area-weighted RMS) times three colour
  directions (:data:`COLOUR_DIRECTIONS`: overall tone along the mean colour, redness, yellowness,
  made orthonormal). The constant function (j = 0) times colour c has standard deviation
  ``sigma_c`` (:data:`COLOUR_SIGMAS`: skin tone varies most between people); eigenvector j >= 1
  has ``SPATIAL_FRACTION * sigma_c / (1 + lambda_j / lambda_1)``, so variation decays with spatial
  frequency. The :data:`NUM_MODES` modes of largest variance are kept (constant tone first),
  sorted by decreasing variance and scaled by their standard deviation (coefficients ~ N(0, 1));
  all modes are area-orthogonal.

On the default model the mean +- 3 standard deviations stays within [0.05, 0.98] at every vertex.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from tfface.morphable.topology import cotangent_laplacian

def _orthonormal_rows(rows: np.ndarray) -> np.ndarray:
    """Gram-Schmidt of the rows, keeping each row's direction."""
    q, r = np.linalg.qr(np.asarray(rows, np.float64).T)
    return (q * np.sign(np.diag(r))).T


#: Mean skin, lip and eyebrow reflectance (RGB in [0, 1]).
SKIN = np.array([0.72, 0.53, 0.44])
LIPS = np.array([0.62, 0.34, 0.33])
BROWS = np.array([0.36, 0.26, 0.21])

#: Width (mm) of the soft edge of the lip region and half width of the eyebrow band.
LIP_SOFTNESS_MM = 1.5
BROW_HALF_WIDTH_MM = 4.0

#: Colour directions: orthonormal RGB rows (Gram-Schmidt of the overall tone along the mean skin
#: colour, redness (2, -1, -1) and yellowness (1, 1, -2)), and their standard deviations for the
#: constant mode.
COLOUR_DIRECTIONS = _orthonormal_rows(np.stack([SKIN, [2.0, -1.0, -1.0], [1.0, 1.0, -2.0]]))
COLOUR_SIGMAS = np.array([0.10, 0.03, 0.02])

#: Standard deviation of the smoothest non-constant modes relative to the constant ones.
SPATIAL_FRACTION = 0.4

#: Number of albedo modes kept.
NUM_MODES = 40

#: Number of Laplacian eigenvectors computed (the constant one included).
NUM_EIGENVECTORS = 24

_LIP_OUTER = np.arange(48, 60)
_BROWS = (np.arange(17, 22), np.arange(22, 27))


def _segment_distance(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each point to an open polyline ``(M, D)``."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    t = np.clip(np.einsum("nmd,md->nm", points[:, None] - a, ab) / np.einsum("md,md->m", ab, ab), 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(axis=1)


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: even-odd test of 2D points against a closed polygon ``(M, 2)``."""
    x, y = points[:, 0:1], points[:, 1:2]
    a, b = polygon, np.roll(polygon, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return np.sum(crosses & (x < x_at), axis=1) % 2 == 1


def region_weights(mean: np.ndarray, landmarks68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft lip and eyebrow memberships in [0, 1] of every vertex of the mean shape (mm)."""
    lip_polygon = mean[landmarks68[_LIP_OUTER], :2]
    distance = _segment_distance(mean[:, :2], np.concatenate([lip_polygon, lip_polygon[:1]]))
    signed = np.where(_inside_polygon(mean[:, :2], lip_polygon), distance, -distance)
    lips = 1.0 / (1.0 + np.exp(-signed / (0.5 * LIP_SOFTNESS_MM)))
    brow_distance = np.min([_segment_distance(mean, mean[landmarks68[b]]) for b in _BROWS], axis=0)
    brows = np.exp(-0.5 * (brow_distance / BROW_HALF_WIDTH_MM) ** 2)
    return lips, brows


def albedo_mean(mean: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """``(N, 3)`` float32 prior mean reflectance of the vertices of ``mean`` ``(N, 3)`` mm."""
    lips, brows = region_weights(np.asarray(mean, np.float64), np.asarray(landmarks68))
    colour = SKIN + lips[:, None] * (LIPS - SKIN)
    colour = colour + brows[:, None] * (BROWS - colour)
    return colour.astype(np.float32)


def smooth_modes(mean: np.ndarray, triangles: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smoothest functions on the mesh.

    Returns:
        ``eigenvalues`` ``(count,)`` ascending (1/mm^2) and ``modes`` ``(count, N)`` with unit
        area-weighted RMS; the first is the constant function.
    """
    laplacian, areas = cotangent_laplacian(mean, triangles)
    areas = np.maximum(areas, 1e-12)
    values, vectors = spla.eigsh(laplacian.tocsc(), k=count, M=sp.diags(areas).tocsc(), sigma=-1e-6, which="LM")
    order = np.argsort(values)
    values, vectors = np.maximum(values[order], 0.0), vectors[:, order].T
    vectors *= np.sqrt(areas.sum() / np.einsum("kn,n,kn->k", vectors, areas, vectors))[:, None]
    signs = np.sign(vectors[np.arange(count), np.argmax(np.abs(vectors), axis=1)])
    return values, vectors * signs[:, None]


def albedo_prior(mean: np.ndarray, triangles: np.ndarray, landmarks68: np.ndarray,
                 num_modes: int = NUM_MODES) -> tuple[np.ndarray, np.ndarray]:
    """The prior's mean ``(N, 3)`` and modes ``(num_modes, N, 3)`` (float32, scaled by std)."""
    values, modes = smooth_modes(mean, triangles, NUM_EIGENVECTORS)
    falloff = np.concatenate([[1.0], SPATIAL_FRACTION / (1.0 + values[1:] / values[1])])
    sigma = falloff[:, None] * COLOUR_SIGMAS[None, :]  # (J, 3 colours)
    order = np.argsort(-sigma.ravel(), kind="stable")[:num_modes]
    j, c = np.unravel_index(order, sigma.shape)
    basis = sigma[j, c][:, None, None] * modes[j][:, :, None] * COLOUR_DIRECTIONS[c][:, None, :]
    return albedo_mean(mean, landmarks68), basis.astype(np.float32)
