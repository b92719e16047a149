"""The 3D morphable model (3DMM) held in memory.

A :class:`MorphableModel` is a triangle mesh whose vertex positions and colours are linear in a
few coefficients::

    vertices = mean + sum_i alpha_i * shape_basis[i] + sum_i beta_i * expression_basis[i]
    albedo   = albedo_mean + sum_i gamma_i * albedo_basis[i]

All bases are scaled so that the prior of every coefficient is N(0, 1) (supplement A). Positions
are in millimetres in model space (right-handed, +y up, +z out of the face towards the viewer),
albedo is linear RGB reflectance in [0, 1].
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from tfface.errors import ModelFileError

if TYPE_CHECKING:
    import numpy.typing as npt

#: Index groups of the 68 iBUG landmarks that define the common 5 landmarks: left eye centre,
#: right eye centre (subject's left/right as in the iBUG mark-up: 36-41 and 42-47), nose tip,
#: left and right mouth corners.
LANDMARK5_GROUPS: tuple[tuple[int, ...], ...] = (
    tuple(range(36, 42)),
    tuple(range(42, 48)),
    (30,),
    (48,),
    (54,),
)


def landmarks5_from_68(points68: np.ndarray) -> np.ndarray:
    """Reduce 68 landmark positions to the 5-landmark convention.

    Args:
        points68: ``(..., 68, D)`` positions (pixels or millimetres).

    Returns:
        ``(..., 5, D)``: eye centres (means of the six eye-contour points), nose tip and the two
        mouth corners.
    """
    points68 = np.asarray(points68)
    return np.stack([points68[..., list(g), :].mean(axis=-2) for g in LANDMARK5_GROUPS], axis=-2)


@dataclasses.dataclass(frozen=True)
class MorphableModel:
    """A linear 3DMM: mean, bases, triangles and landmark vertices.

    Attributes:
        mean: ``(N, 3)`` float32 mean shape in mm.
        shape_basis: ``(Ks, N, 3)`` float32 identity modes, scaled by their standard deviation.
        expression_basis: ``(Ke, N, 3)`` float32 expression modes, scaled likewise.
        albedo_mean: ``(N, 3)`` float32 mean reflectance in [0, 1].
        albedo_basis: ``(Kr, N, 3)`` float32 reflectance modes, scaled by standard deviation.
        triangles: ``(T, 3)`` int32 vertex indices, counter-clockwise seen from the front.
        landmarks68: ``(68,)`` int32 vertex index of each iBUG landmark.
        name: a short human-readable name ("ict-face-light", "bfm2017", ...).
    """

    mean: np.ndarray
    shape_basis: np.ndarray
    expression_basis: np.ndarray
    albedo_mean: np.ndarray
    albedo_basis: np.ndarray
    triangles: np.ndarray
    landmarks68: np.ndarray
    name: str = "morphable-model"

    def __post_init__(self) -> None:
        for field in ("mean", "shape_basis", "expression_basis", "albedo_mean", "albedo_basis"):
            object.__setattr__(self, field, np.ascontiguousarray(getattr(self, field), np.float32))
        for field in ("triangles", "landmarks68"):
            object.__setattr__(self, field, np.ascontiguousarray(getattr(self, field), np.int32))
        self.validate()

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shape_basis.shape[0])

    @property
    def num_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    @property
    def num_albedo(self) -> int:
        return int(self.albedo_basis.shape[0])

    def validate(self) -> None:
        """Check shapes, index ranges and finiteness; raise :class:`ModelFileError` if wrong."""
        n = self.mean.shape[0] if self.mean.ndim == 2 else -1
        checks = [
            (self.mean.ndim == 2 and self.mean.shape[1] == 3, f"mean must be (N, 3), got {self.mean.shape}"),
            (n > 0, "the model has no vertices"),
        ]
        for field in ("shape_basis", "expression_basis", "albedo_basis"):
            b = getattr(self, field)
            checks.append((b.ndim == 3 and b.shape[1:] == (n, 3), f"{field} must be (K, {n}, 3), got {b.shape}"))
        checks += [
            (self.albedo_mean.shape == (n, 3), f"albedo_mean must be ({n}, 3), got {self.albedo_mean.shape}"),
            (self.triangles.ndim == 2 and self.triangles.shape[1] == 3 and self.triangles.shape[0] > 0,
             f"triangles must be (T, 3), got {self.triangles.shape}"),
            (self.landmarks68.shape == (68,), f"landmarks68 must be (68,), got {self.landmarks68.shape}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ModelFileError(f"{self.name}: {message}")
        for field in ("triangles", "landmarks68"):
            idx = getattr(self, field)
            if idx.min() < 0 or idx.max() >= n:
                raise ModelFileError(f"{self.name}: {field} index out of range [0, {n})")
        for field in ("mean", "shape_basis", "expression_basis", "albedo_mean", "albedo_basis"):
            if not np.all(np.isfinite(getattr(self, field))):
                raise ModelFileError(f"{self.name}: {field} has NaN or infinite values")

    def vertices(self, shape_coeffs: npt.ArrayLike | None = None,
                 expression_coeffs: npt.ArrayLike | None = None) -> np.ndarray:
        """Vertex positions for the given coefficients.

        Args:
            shape_coeffs: ``(..., Ks')`` with ``Ks' <= Ks`` (missing trailing ones are zero), or None.
            expression_coeffs: ``(..., Ke')`` likewise, or None.

        Returns:
            ``(..., N, 3)`` float32 positions in mm.
        """
        out = self.mean
        for coeffs, basis in ((shape_coeffs, self.shape_basis), (expression_coeffs, self.expression_basis)):
            if coeffs is not None:
                coeffs = np.asarray(coeffs, np.float32)
                out = out + np.tensordot(coeffs, basis[: coeffs.shape[-1]], axes=([-1], [0]))
        return out.astype(np.float32)

    def albedo(self, albedo_coeffs: npt.ArrayLike | None = None) -> np.ndarray:
        """Per-vertex reflectance ``(..., N, 3)`` for ``(..., Kr')`` coefficients (None: the mean)."""
        if albedo_coeffs is None:
            return self.albedo_mean
        coeffs = np.asarray(albedo_coeffs, np.float32)
        return (self.albedo_mean + np.tensordot(coeffs, self.albedo_basis[: coeffs.shape[-1]], axes=([-1], [0]))).astype(np.float32)

    def truncated(self, num_shape: int | None = None, num_expression: int | None = None,
                  num_albedo: int | None = None) -> "MorphableModel":
        """The model with only the leading basis vectors of each kind (None keeps all)."""
        return dataclasses.replace(
            self,
            shape_basis=self.shape_basis[:num_shape],
            expression_basis=self.expression_basis[:num_expression],
            albedo_basis=self.albedo_basis[:num_albedo],
        )
