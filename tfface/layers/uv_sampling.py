"""Keras layer sampling a UV-3DMM at predicted correspondences.

The layer holds the packed sampling tables of a :class:`~tfface.morphable.uv3dmm.UVMorphableModel`
(locator, triangles, per-vertex mean and basis rows) as non-trainable weights, so a saved Keras
model carries them and reloads without the UV-3DMM file. Its config records only the table shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from tfface.morphable import sampling
from tfface.morphable.sampling import SamplingTables, UVSample
from tfface.morphable.texel_map import TexelLocator

if TYPE_CHECKING:
    from tfface.morphable.uv3dmm import UVMorphableModel

#: Flat names of the tables (locator fields prefixed with ``locator_``), in ``tf.nest`` order.
TABLE_NAMES: tuple[str, ...] = tuple(
    f"locator_{f}" for f in TexelLocator._fields) + SamplingTables._fields[1:]


@keras.saving.register_keras_serializable(package="tfface")
class UVSampling(keras.layers.Layer):
    """Sample the mean and bases of a UV-3DMM at ``(u, v)`` correspondences, exactly and differentiably.

    Args:
        resolution: texel grid size S of the UV-3DMM.
        table_shapes: shape of every table named in :data:`TABLE_NAMES` (see :meth:`from_uv_model`).
        jit_compile: run the sampler compiled with XLA (fuses each gather with its blend).
        persist_tables: write the tables into saved weights and read them back. An owner that
            rebuilds them from its UV-3DMM file (:class:`tfface.model.FaceModel`) passes False,
            which keeps the constant tables (20 MB for the default model) out of every checkpoint.

    Call:
        ``uv`` ``(B, P, 2)`` float32 -> :class:`UVSample` (see :meth:`UVMorphableModel.sample`).
    """

    def __init__(self, resolution: int, table_shapes: dict[str, list[int]], jit_compile: bool = True,
                 persist_tables: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.resolution = int(resolution)
        self.persist_tables = bool(persist_tables)
        self.table_shapes = {k: [int(d) for d in v] for k, v in table_shapes.items()}
        self.jit_compile = bool(jit_compile)
        missing = set(TABLE_NAMES) - set(self.table_shapes)
        if missing:
            raise ValueError(f"table_shapes is missing {sorted(missing)}")
        self._weights_flat = [
            self.add_weight(name=name, shape=tuple(self.table_shapes[name]), trainable=False,
                            initializer="zeros", dtype=_table_dtype(name))
            for name in TABLE_NAMES]

    @classmethod
    def from_uv_model(cls, uv_model: UVMorphableModel, **kwargs) -> "UVSampling":
        """A layer holding the tables of ``uv_model`` (a :class:`UVMorphableModel`)."""
        flat = tf.nest.flatten(uv_model.tables())
        layer = cls(uv_model.resolution, {n: list(v.shape) for n, v in zip(TABLE_NAMES, flat)}, **kwargs)
        for weight, value in zip(layer._weights_flat, flat):
            weight.assign(value)
        return layer

    def _tables(self) -> SamplingTables:
        template = SamplingTables(TexelLocator(*TexelLocator._fields), *SamplingTables._fields[1:])
        return tf.nest.pack_sequence_as(template, [w.value for w in self._weights_flat])

    def call(self, uv) -> UVSample:
        uv = sampling.check_uv(uv)
        sample = sampling.sample_tables_compiled if self.jit_compile else sampling.sample_tables
        return sample(uv, self._tables(), self.resolution)

    def interpolate(self, uv: tf.Tensor, table: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A per-vertex ``table`` interpolated at correspondences, as the model's rows are.

        Args:
            uv: ``(B, P, 2)`` float32 correspondences.
            table: ``(V, R)`` float32 values at the mesh vertices.

        Returns:
            ``((B, P, R) values, (B, P) float32 valid)``; values are 0 where ``uv`` lies outside the mesh.
        """
        tables = self._tables()
        triangle, barycentrics, valid = sampling.locate(sampling.check_uv(uv), tables, self.resolution)
        values = sampling.blend(table, tf.gather(tables.triangles, triangle), barycentrics)
        return values, tf.cast(valid, tf.float32)

    def vertex_values(self, coefficients: tf.Tensor, part: str = "geometry") -> tf.Tensor:
        """The linear model at its mesh vertices: ``mean + basis @ coefficients`` per vertex.

        Reads the same per-vertex tables the sampler blends, so a model that needs the fitted
        mesh holds no second copy of the basis.

        Args:
            coefficients: ``(B, K)`` float32; ``K`` is the number of modes of ``part``.
            part: ``"geometry"`` (shape then expression modes, mm) or ``"albedo"`` (reflectance).

        Returns:
            ``(B, V, 3)`` float32 per-vertex positions (mm) or albedo.
        """
        names = {"geometry": ("mean", "basis"), "albedo": ("albedo_mean", "albedo_basis")}
        if part not in names:
            raise ValueError(f"part must be one of {sorted(names)}, got {part!r}")
        tables = dict(zip(TABLE_NAMES, self._weights_flat))
        mean, basis = (tables[name].value for name in names[part])
        vertices = mean.shape[0]
        rows = tf.reshape(basis, [3 * vertices, -1])  # rows (vertex, xyz), columns modes
        offsets = tf.matmul(tf.convert_to_tensor(coefficients, tf.float32), rows, transpose_b=True)
        return mean + tf.reshape(offsets, [-1, vertices, 3])

    def save_own_variables(self, store: dict) -> None:
        if self.persist_tables:
            super().save_own_variables(store)

    def load_own_variables(self, store: dict) -> None:
        if self.persist_tables:
            super().load_own_variables(store)

    def compute_output_spec(self, uv):
        b, p = uv.shape[0], uv.shape[1]
        k = self.table_shapes["basis"][1] // 3
        kr = self.table_shapes["albedo_basis"][1] // 3
        spec = keras.KerasTensor
        return UVSample(mean=spec((b, p, 3)), basis=spec((b, p, 3, k)), albedo_mean=spec((b, p, 3)),
                        albedo_basis=spec((b, p, 3, kr)), vertex_ids=spec((b, p, 3), dtype="int32"),
                        barycentrics=spec((b, p, 3)), valid=spec((b, p)))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(resolution=self.resolution, table_shapes=self.table_shapes, jit_compile=self.jit_compile,
                      persist_tables=self.persist_tables)
        return config


def _table_dtype(name: str) -> str:
    integer = ("locator_children", "locator_candidates", "locator_polar", "locator_polar_bins", "triangles")
    return "int32" if name in integer else "float32"
