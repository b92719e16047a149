"""Training from an export: the UV-3DMM and the network come back exactly from the exported folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf
from test_export import TOY_CONFIG, loaded_export, toy_export, toy_faces, toy_images  # noqa: F401 (fixtures)

from tfface import export
from tfface.errors import InputError, ModelFileError
from tfface.model import FaceModel, truncate_uv_model
from tfface.morphable.loaders import MODEL_FIELDS
from tfface.training.from_export import (check_network_matches, exported_network, exported_uv_model,
                                         restore_exported_network)


@pytest.fixture(scope="module")
def recovered(toy_export, toy_uv_model):
    return exported_uv_model(toy_export[1], resolution=toy_uv_model.resolution)


def _built(uv_model, config=TOY_CONFIG) -> FaceModel:
    model = FaceModel(uv_model, config)
    model(tf.zeros([1, config.image_size, config.image_size, 3]))
    return model


def test_an_export_gives_back_the_uv3dmm_it_fits(recovered, toy_uv_model):
    fitted = truncate_uv_model(toy_uv_model, TOY_CONFIG)  # the export keeps the modes its fit uses
    assert (recovered.model.num_shape, recovered.model.num_expression, recovered.model.num_albedo) == (4, 3, 2)
    for field in MODEL_FIELDS:
        np.testing.assert_array_equal(getattr(recovered.model, field), getattr(fitted.model, field), err_msg=field)
    np.testing.assert_array_equal(recovered.vertex_uv, fitted.vertex_uv)
    assert recovered.num_original_vertices == fitted.num_original_vertices
    assert recovered.model.name == fitted.model.name
    for name, table in recovered.locator._asdict().items():
        np.testing.assert_array_equal(table, getattr(fitted.locator, name), err_msg=name)


def test_the_restored_network_reproduces_the_export(recovered, toy_export, loaded_export, toy_images):
    keras_model, folder = toy_export
    model = _built(recovered)
    assert not np.allclose(model.unet.weights[0].numpy(), keras_model.unet.weights[0].numpy())
    restore_exported_network(model, folder)
    for restored, original in zip(model.unet.weights + model.regularizer.weights,
                                  keras_model.unet.weights + keras_model.regularizer.weights, strict=True):
        np.testing.assert_array_equal(restored.numpy(), original.numpy(), err_msg=original.path)
    served = loaded_export.signatures["serving_default"](images=tf.constant(toy_images))
    rebuilt = export.KerasInference(exported_network(folder, recovered))(toy_images)
    assert np.all(rebuilt["fit_valid"] == 1)
    np.testing.assert_allclose(rebuilt["landmarks68"], served["landmarks68"].numpy(), atol=1e-3)
    np.testing.assert_allclose(rebuilt["vertices"], served["vertices"].numpy(), atol=1e-2)


def test_another_network_or_a_folder_that_is_no_export_is_refused(recovered, toy_export, tmp_path):
    folder = toy_export[1]
    check_network_matches(TOY_CONFIG, folder)
    with pytest.raises(InputError, match=r"input_vignette 0\.4 \(the export: 0\.0\), width 0\.5 \(the export: 0\.25\)"):
        check_network_matches(TOY_CONFIG.replace(width=0.5, input_vignette=0.4), folder)
    with pytest.raises(ModelFileError, match="does not fit this model"):
        restore_exported_network(_built(recovered, TOY_CONFIG.replace(width=0.5)), folder)
    with pytest.raises(ModelFileError, match="not an exported tfface model"):
        exported_uv_model(tmp_path)
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    (damaged / "saved_model.pb").write_bytes(b"\x00 not a SavedModel")
    with pytest.raises(ModelFileError, match="saved_model.pb lacks the serving_default outputs"):
        exported_uv_model(damaged)


def test_albedo_learning_runs_an_exported_network(toy_export, tmp_path, capsys):
    """``tfface albedo learn --model``: the export's network fits the photos (black ones: no face,
    so every fit fails and too few are left to learn from)."""
    from PIL import Image

    from tfface.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(4):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photos / f"{index}.png")
    status = main(["albedo", "learn", "--model", str(toy_export[1]), "--images", str(photos), "--count", "4",
                   "--modes", "2", "--out", str(tmp_path / "albedo.npz")])
    assert status == 2 and "0 of the 4 photos were fitted (4 failed fits)" in capsys.readouterr().err
    status = main(["albedo", "learn", "--model", str(toy_export[1]), "--config", "tiny", "--images", str(photos),
                   "--count", "4", "--out", str(tmp_path / "albedo.npz")])
    assert status == 2 and "an exported model (--model) carries its own config" in capsys.readouterr().err
