"""Training from an exported model: its UV-3DMM and its network's weights.

An export (:func:`tfface.export.export_model`) holds what a run needs to continue from it: the
U-Net's and the adaptive regulariser's weights in the SavedModel's variables, the fitted model's
per-vertex tables (mean, identity and expression bases, albedo mean and the albedo modes the fit
uses) in its sampler's variables, and the mesh (triangles, landmark vertices, Tutte UVs) in
``assets.extra/mesh.npz``. ``tfface train --init-model FOLDER`` starts the main training from
them instead of pretraining: to fine-tune a shipped network on one's own photos, or to continue
research from a version whose run folder is gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from tfface.errors import InputError, ModelFileError
from tfface.export import read_extras
from tfface.layers.uv_sampling import TABLE_NAMES
from tfface.morphable.model import MorphableModel
from tfface.morphable.texel_map import build_locator
from tfface.morphable.uv3dmm import DEFAULT_RESOLUTION, UVMorphableModel

if TYPE_CHECKING:
    from tfface.model import FaceModel
    from tfface.training.config import TrainConfig

#: Configuration fields that define the network's function: a run continuing an export must
#: share them (its input size and vignette, the U-Net's variant and width, the depth offset).
NETWORK_FIELDS = ("image_size", "input_vignette", "variant", "width", "depth_offset")


def _variables_prefix(folder: Path) -> str:
    """The checkpoint prefix of a SavedModel's variables."""
    return str(folder / "variables" / "variables")


def _variables(folder: Path) -> tf.train.CheckpointReader:
    try:
        return tf.train.load_checkpoint(_variables_prefix(folder))
    except (tf.errors.OpError, ValueError) as error:
        raise ModelFileError(f"{folder}: unreadable SavedModel variables ({error})") from error


def _table(reader: tf.train.CheckpointReader, folder: Path, name: str) -> np.ndarray:
    key = f"model/uv_sampling/_weights_flat/{TABLE_NAMES.index(name)}/.ATTRIBUTES/VARIABLE_VALUE"
    if not reader.has_tensor(key):
        raise ModelFileError(f"{folder}: the export has no sampler table {name!r}")
    return reader.get_tensor(key)


def _output_widths(folder: Path, *names: str) -> list[int]:
    """The last dimension of each output in ``names`` of the export's ``serving_default``
    signature, read off ``saved_model.pb`` (loading the SavedModel would trace its functions)."""
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((folder / "saved_model.pb").read_bytes())
        outputs = proto.meta_graphs[0].signature_def["serving_default"].outputs
        return [int(outputs[name].tensor_shape.dim[-1].size) for name in names]
    except (OSError, DecodeError, IndexError, KeyError) as error:
        raise ModelFileError(f"{folder}: saved_model.pb lacks the serving_default outputs {names} ({error})") from error


def _bases(rows: np.ndarray, count: int) -> np.ndarray:
    """``(K, V, 3)`` modes from sampler rows ``(V, 3 K)`` (per vertex the ``(3, K)`` block)."""
    return np.ascontiguousarray(rows.reshape(rows.shape[0], 3, count).transpose(2, 0, 1))


def exported_uv_model(folder: str | Path, resolution: int = DEFAULT_RESOLUTION) -> UVMorphableModel:
    """The UV-3DMM an export fits, rebuilt from its sampler tables and mesh.

    The albedo keeps only the modes the export's fit uses (its ``num_albedo``); the texel locator
    is built anew at ``resolution`` (sampling is exact at any locator resolution).

    Args:
        folder: an exported version folder (``savedmodel/<name>/<version>``).
        resolution: texel grid size S of the rebuilt locator.

    Returns:
        A :class:`UVMorphableModel` whose sampling tables equal the export's.

    Raises:
        ModelFileError: if ``folder`` is not a readable export.
    """
    folder = Path(folder)
    metadata, mesh = read_extras(folder)
    reader = _variables(folder)
    mean, basis, albedo_mean, albedo_rows = (_table(reader, folder, name)
                                            for name in ("mean", "basis", "albedo_mean", "albedo_basis"))
    num_shape, num_expression = _output_widths(folder, "shape_coefficients", "expression_coefficients")
    if 3 * (num_shape + num_expression) != basis.shape[1] or mean.shape != mesh.vertex_uv.shape[:1] + (3,):
        raise ModelFileError(f"{folder}: the sampler tables disagree with the exported outputs and mesh")
    bases = _bases(basis, num_shape + num_expression)
    model = MorphableModel(mean=mean, shape_basis=bases[:num_shape], expression_basis=bases[num_shape:],
                           albedo_mean=albedo_mean, albedo_basis=_bases(albedo_rows, albedo_rows.shape[1] // 3),
                           triangles=mesh.triangles, landmarks68=mesh.landmarks68, name=metadata["model_name"])
    return UVMorphableModel(model, mesh.vertex_uv, int(resolution), mesh.num_original_vertices,
                            build_locator(mesh.vertex_uv, mesh.triangles, int(resolution)))


def check_network_matches(config: TrainConfig, folder: str | Path) -> None:
    """Refuse a training configuration whose network differs from the export's.

    Raises:
        InputError: naming each of :data:`NETWORK_FIELDS` that differs, with both values.
        ModelFileError: if ``folder`` is not a readable export.
    """
    exported = read_extras(folder)[0]["config"]
    differ = [f"{name} {getattr(config, name)!r} (the export: {exported.get(name)!r})" for name in NETWORK_FIELDS
              if getattr(config, name) != exported.get(name)]
    if differ:
        raise InputError(f"the configuration's network differs from the export {folder}: {', '.join(differ)}; "
                         f"use a configuration with the export's fields ({Path(folder) / 'assets.extra/tfface.json'})")


def restore_exported_network(model: FaceModel, folder: str | Path) -> None:
    """Set ``model``'s U-Net and adaptive regulariser to an export's weights.

    Args:
        model: a built :class:`FaceModel` of the export's network (:func:`check_network_matches`)
            and number of shape and expression modes.
        folder: an exported version folder.

    Raises:
        ModelFileError: if the export is unreadable or a weight is missing from it or of another
            shape.
    """
    folder = Path(folder)
    read_extras(folder)
    trained = tf.train.Checkpoint(unet=model.unet, regularizer=model.regularizer)
    try:
        status = tf.train.Checkpoint(model=trained).read(_variables_prefix(folder))
        status.assert_existing_objects_matched().expect_partial()  # the sampler's tables are not restored
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ModelFileError(f"{folder}: its network does not fit this model ({str(error)[:500]})") from error


def exported_network(folder: str | Path, uv_model: UVMorphableModel, **changes) -> FaceModel:
    """An export's network as an inference-configured Keras :class:`FaceModel` (its training
    configuration, e.g. the flip test, and weights), fitting ``uv_model``.

    Args:
        folder: an exported version folder.
        uv_model: the UV-3DMM to fit, usually :func:`exported_uv_model` of ``folder``.
        **changes: configuration fields to change, e.g. ``inference_upright_pass=False`` (the
            network's own fields must stay: :func:`restore_exported_network`).

    Raises:
        ModelFileError: if the export is unreadable or its network does not fit ``uv_model``.
    """
    from tfface.export import inference_model
    from tfface.model import FaceModel
    from tfface.training.config import TrainConfig

    config = TrainConfig(**{**read_extras(folder)[0]["config"], **changes})
    trained = FaceModel(uv_model, config)
    trained(tf.zeros([1, config.image_size, config.image_size, 3]))
    restore_exported_network(trained, folder)
    return inference_model(trained)
