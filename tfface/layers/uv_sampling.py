"""Keras layer sampling a UV-3DMM at predicted correspondences.

The layer holds the packed sampling tables of a :class:`~tfface.morphable.uv3dmm.UVMorphableModel`
(locator, triangles, per-vertex mean and basis rows) as non-trainable weights, so a saved Keras
model carries them and reloads without the UV-3DMM file. Its config records only the table shapes.
"""

from __future__ import annotations

import keras
import numpy as np

from tfface.morphable import sampling
from tfface.morphable.sampling import SamplingTables, UVSample


@keras.saving.register_keras_serializable(package="tfface")
class UVSampling(keras.layers.Layer):
    """Sample the mean and bases of a UV-3DMM at ``(u, v)`` correspondences, exactly and differentiably.

    Args:
        resolution: texel grid size S of the UV-3DMM.
        table_shapes: shape of every field of :class:`SamplingTables` (from :meth:`from_uv_model`).
        jit_compile: run the sampler compiled with XLA (fuses each gather with its blend).

    Call:
        ``uv`` ``(B, P, 2)`` float32 -> :class:`UVSample` (see :meth:`UVMorphableModel.sample`).
    """

    def __init__(self, resolution: int, table_shapes: dict[str, list[int]], jit_compile: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.resolution = int(resolution)
        self.table_shapes = {k: [int(d) for d in v] for k, v in table_shapes.items()}
        self.jit_compile = bool(jit_compile)
        missing = set(SamplingTables._fields) - set(self.table_shapes)
        if missing:
            raise ValueError(f"table_shapes is missing {sorted(missing)}")
        self._tables = SamplingTables(*[
            self.add_weight(name=name, shape=tuple(self.table_shapes[name]), trainable=False,
                            initializer="zeros", dtype=_table_dtype(name))
            for name in SamplingTables._fields])

    @classmethod
    def from_uv_model(cls, uv_model, **kwargs) -> "UVSampling":
        """A layer holding the tables of ``uv_model`` (a :class:`UVMorphableModel`)."""
        m = uv_model.model
        tables = sampling.sampling_tables(uv_model.vertex_uv, m.triangles, uv_model.locator, m.mean, m.shape_basis,
                                          m.expression_basis, m.albedo_mean, m.albedo_basis)
        layer = cls(uv_model.resolution, {k: list(np.shape(v)) for k, v in tables._asdict().items()}, **kwargs)
        for weight, value in zip(layer._tables, tables):
            weight.assign(value)
        return layer

    def call(self, uv) -> UVSample:
        uv = sampling.check_uv(uv)
        sample = sampling.sample_tables_compiled if self.jit_compile else sampling.sample_tables
        return sample(uv, SamplingTables(*[w.value for w in self._tables]), self.resolution)

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
        config.update(resolution=self.resolution, table_shapes=self.table_shapes, jit_compile=self.jit_compile)
        return config


def _table_dtype(name: str) -> str:
    return "int32" if name in ("children", "candidates", "polar", "polar_bins", "triangles") else "float32"
