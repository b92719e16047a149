"""The UV-3DMM: a morphable model flattened onto the unit square (supplement A, DESIGN.md).

Building one (:meth:`UVMorphableModel.build`) fills the model's holes, computes the Tutte
embedding of the resulting disk onto ``[0, 1]^2`` and the texel index map at S x S; sampling
(:meth:`UVMorphableModel.sample`) returns the mean and bases at any ``(u, v)`` exactly and
differentiably. Per-vertex rows are stored, never dense S x S x K images (:meth:`dense_images`
renders those for visualisation only).
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfface.errors import ModelFileError
from tfface.morphable import sampling
from tfface.morphable.loaders import MODEL_FIELDS
from tfface.morphable.model import MorphableModel
from tfface.morphable.sampling import UVSample
from tfface.morphable.texel_map import TexelLocator, build_locator
from tfface.morphable.topology import fill_holes
from tfface.morphable.tutte import tutte_embedding

#: Format tag stored in UV-3DMM files.
UV3DMM_FORMAT = "tfface-uv3dmm/1"

#: Default texel grid size (supplement A: 320 x 320).
DEFAULT_RESOLUTION = 320

#: Build stages reported to the ``progress`` callback, in order.
BUILD_STAGES = ("fill holes", "Tutte embedding", "texel map", "sampling tables")


@dataclasses.dataclass(frozen=True, eq=False)
class UVMorphableModel:
    """A hole-filled morphable model with a bijective UV parameterisation and a texel index map.

    Attributes:
        model: the hole-filled :class:`MorphableModel`; auxiliary vertices follow the original ones.
        vertex_uv: ``(V, 2)`` float32 Tutte UV of every vertex, in ``[0, 1]^2``.
        resolution: texel grid size S.
        num_original_vertices: vertices of the model before hole filling.
        locator: the :class:`TexelLocator` (candidate triangles per texel, refined).
    """

    model: MorphableModel
    vertex_uv: np.ndarray
    resolution: int
    num_original_vertices: int
    locator: TexelLocator

    def __post_init__(self) -> None:
        v, t, s = self.model.num_vertices, self.model.triangles.shape[0], self.resolution
        if self.vertex_uv.shape != (v, 2):
            raise ModelFileError(f"vertex_uv must be ({v}, 2), got {self.vertex_uv.shape}")
        if not np.all((self.vertex_uv >= 0) & (self.vertex_uv <= 1)):
            raise ModelFileError("vertex_uv must lie in the unit square (and be finite)")
        loc = self.locator
        n = loc.children.shape[0]
        if loc.children.ndim != 2 or loc.children.shape[1] != 4 or n < s * s:
            raise ModelFileError(f"locator children must be (N >= {s * s}, 4), got {loc.children.shape}")
        if loc.candidates.shape[0] != n or loc.polar.shape != (n,):
            raise ModelFileError("locator tables disagree on the number of nodes")
        num_polar = loc.polar_centres.shape[0] - 1
        ranges = ((loc.children, n - 1), (loc.candidates, t), (loc.polar, num_polar), (loc.polar_bins, t))
        if loc.polar_bins.shape[0] != num_polar + 1 or any(a.min() < 0 or a.max() > hi for a, hi in ranges):
            raise ModelFileError("locator tables index out of range")
        if not 0 < self.num_original_vertices <= v:
            raise ModelFileError(f"num_original_vertices must be in (0, {v}], got {self.num_original_vertices}")
        object.__setattr__(self, "_tables", None)

    @classmethod
    def build(cls, model: MorphableModel, resolution: int = DEFAULT_RESOLUTION,
              progress: Callable[[str], None] | None = None) -> "UVMorphableModel":
        """Flatten ``model``: fill holes, Tutte-embed onto the unit square, build the texel map.

        Args:
            model: a manifold, consistently oriented (counter-clockwise from the front) model.
            resolution: texel grid size S.
            progress: called with each name of :data:`BUILD_STAGES` when that stage finishes.

        Raises:
            ModelFileError: if the mesh cannot be made a disk; SolveError if the embedding fails.
        """
        report = progress or (lambda stage: None)
        filled = fill_holes(model)
        report(BUILD_STAGES[0])
        uv = tutte_embedding(filled.model.mean, filled.model.triangles, filled.outer_loop).astype(np.float32)
        report(BUILD_STAGES[1])
        locator = build_locator(uv, filled.model.triangles, resolution)
        report(BUILD_STAGES[2])
        uv_model = cls(filled.model, uv, int(resolution), filled.num_original_vertices, locator)
        uv_model.tables()
        report(BUILD_STAGES[3])
        return uv_model

    def tables(self) -> sampling.SamplingTables:
        """The packed per-vertex sampling tables as TF constants (computed once, then cached)."""
        if self._tables is None:
            m = self.model
            packed = sampling.sampling_tables(self.vertex_uv, m.triangles, self.locator, m.mean,
                                              m.shape_basis, m.expression_basis, m.albedo_mean, m.albedo_basis)
            object.__setattr__(self, "_tables", tf.nest.map_structure(tf.constant, packed))
        return self._tables

    def sample(self, uv: tf.Tensor) -> UVSample:
        """Sample the model at correspondences ``uv`` ``(B, P, 2)`` float32 (XLA-compiled).

        Returns:
            :class:`UVSample`; exact barycentric blends of the containing triangle's vertex rows,
            differentiable in ``uv``; zeros and ``valid = 0`` outside the unit square.

        Raises:
            InputError: if ``uv`` is not a float ``(B, P, 2)`` tensor.
        """
        return sampling.sample_tables_compiled(sampling.check_uv(uv), self.tables(), self.resolution)

    def texel_centres(self) -> np.ndarray:
        """``(S, S, 2)`` float32 UV of every texel centre, indexed ``[row, col]``."""
        c = (np.arange(self.resolution, dtype=np.float32) + 0.5) / self.resolution
        u, v = np.meshgrid(c, c)
        return np.stack([u, v], axis=-1)

    def dense_images(self, modes: Sequence[int] = (0, 1, 2), albedo_modes: Sequence[int] = (0,)) -> dict[str, np.ndarray]:
        """Dense S x S images of the model at the texel centres, for visualisation only.

        Args:
            modes: indices into the stacked basis (identity modes, then expression modes).
            albedo_modes: indices of albedo modes.

        Returns:
            ``mean`` ``(S, S, 3)`` mm, ``basis`` ``(len(modes), S, S, 3)``, ``albedo_mean``
            ``(S, S, 3)``, ``albedo_basis`` ``(len(albedo_modes), S, S, 3)`` and ``valid`` ``(S, S)``.
        """
        s = self.resolution
        sample = self.sample(self.texel_centres().reshape(1, s * s, 2))

        def images(basis: tf.Tensor, indices: Sequence[int]) -> np.ndarray:
            picked = tf.gather(basis[0], np.asarray(indices, np.int32), axis=-1).numpy()  # (S*S, 3, M), M may be 0
            return np.moveaxis(picked, -1, 0).reshape(len(indices), s, s, 3)

        return {
            "mean": sample.mean.numpy().reshape(s, s, 3),
            "basis": images(sample.basis, modes),
            "albedo_mean": sample.albedo_mean.numpy().reshape(s, s, 3),
            "albedo_basis": images(sample.albedo_basis, albedo_modes),
            "valid": sample.valid.numpy().reshape(s, s),
        }

    def save(self, path: str | Path) -> None:
        """Write the UV-3DMM to an ``.npz`` file (read back with :meth:`load`)."""
        m = self.model
        arrays = {f"model_{f}": getattr(m, f) for f in MODEL_FIELDS}
        with open(path, "wb") as handle:
            np.savez(handle, format=np.array(UV3DMM_FORMAT), model_name=np.array(m.name),
                     vertex_uv=self.vertex_uv, resolution=np.array(self.resolution),
                     num_original_vertices=np.array(self.num_original_vertices),
                     **{f"locator_{k}": v for k, v in self.locator._asdict().items()}, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "UVMorphableModel":
        """Read a file written by :meth:`save`.

        Raises:
            ModelFileError: if the file is missing, truncated, corrupt or not a UV-3DMM file.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                if "format" not in data.files or str(data["format"]) != UV3DMM_FORMAT:
                    raise ModelFileError(f"{path}: not a UV-3DMM file (no format tag {UV3DMM_FORMAT!r})")
                locator_keys = [f"locator_{k}" for k in TexelLocator._fields]
                required = [f"model_{f}" for f in MODEL_FIELDS] + locator_keys + [
                    "model_name", "vertex_uv", "resolution", "num_original_vertices"]
                missing = [k for k in required if k not in data.files]
                if missing:
                    raise ModelFileError(f"{path}: UV-3DMM file is missing {', '.join(missing)}")
                model = MorphableModel(**{f: data[f"model_{f}"] for f in MODEL_FIELDS}, name=str(data["model_name"]))
                return cls(model, data["vertex_uv"].astype(np.float32), int(data["resolution"]),
                           int(data["num_original_vertices"]),
                           TexelLocator(*[data[k].astype(np.float32 if data[k].dtype.kind == "f" else np.int32)
                                          for k in locator_keys]))
        except ModelFileError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise ModelFileError(f"{path}: cannot read UV-3DMM file ({error})") from error
