"""Export: SavedModel and TFLite, run in a fresh process, match the Keras model to 1e-4.

The test model is tiny (64 x 64 input, quarter-width U-Net, the toy UV-3DMM, 500 samples). An
untrained U-Net predicts nearly constant correspondences, which makes the least-squares fit
degenerate (every sample on one model point); so the last 1x1 convolution is set in closed
form (least squares on the penultimate features) to predict a correspondence ramp across the
image, constant depth and high confidence, giving a well-posed fit with a valid camera.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface import export
from tfface.errors import InputError, ModelFileError
from tfface.model import FaceModel
from tfface.training.config import CONFIGS

IMAGE_SIZE = 64
#: The toy bump's normals span a narrow cone, so a weak lighting prior leaves some SH bands nearly
#: undetermined; lighting_weight = 1 keeps the photometric solve well conditioned.
TOY_CONFIG = CONFIGS["tiny"].replace(name="toy", image_size=IMAGE_SIZE, width=0.25, num_samples=500, num_shape=4,
                                     num_expression=3, num_albedo=2, lighting_weight=1.0)


def _logit(p):
    return np.log(p / (1.0 - p))


def ramp_model(uv_path, images: np.ndarray, confidence: float = 0.9) -> FaceModel:
    """A configured toy :class:`FaceModel` whose output layer is fitted to ramp correspondences and
    constant ``confidence`` on ``images``."""
    model = FaceModel(str(uv_path), TOY_CONFIG)
    model(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]))
    logits = model.unet.get_layer("logits")
    features = keras.Model(model.unet.inputs, logits.input)(model.preprocessing(images.astype(np.float32) / 255.0))
    features = features.numpy().reshape(-1, logits.input.shape[-1])
    y, x = np.meshgrid((np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE, (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE,
                       indexing="ij")
    flat = np.zeros_like(x)
    target = np.stack([_logit(0.85 - 0.7 * x), _logit(0.15 + 0.7 * (1 - y)), np.log(np.expm1(4.9)) + flat,
                       _logit(confidence) + flat, _logit(confidence) + flat], axis=-1).reshape(-1, 5)
    design = np.c_[features, np.ones(len(features))]
    weights, *_ = np.linalg.lstsq(design, np.tile(target, (len(images), 1)), rcond=None)
    logits.set_weights([weights[:-1].reshape(1, 1, -1, 5).astype(np.float32), weights[-1].astype(np.float32)])
    return export.inference_model(model)


@pytest.fixture(scope="session")
def toy_images():
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)) * 255).astype(np.uint8)


#: The toy export, built once per session even though several test modules import the fixture.
_TOY_EXPORT: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def toy_export(toy_uv_model, toy_images, tmp_path_factory):
    """``(keras_model, version_folder)`` of the toy model exported with TFLite."""
    if "toy" not in _TOY_EXPORT:
        root = tmp_path_factory.mktemp("export")
        uv_path = root / "toy_uv.npz"
        toy_uv_model.save(uv_path)
        model = ramp_model(uv_path, toy_images)
        _TOY_EXPORT["toy"] = model, export.export_model(model, root / "savedmodel", "toy", 1)
    return _TOY_EXPORT["toy"]


def assert_close_scaled(actual, desired, name: str, tolerance: float = 1e-4) -> None:
    """``|actual - desired| <= tolerance * max(1, max |desired|)`` elementwise (relative to the output's scale)."""
    scale = max(1.0, float(np.abs(desired).max()))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=tolerance * scale, err_msg=name)


RUN_EXPORTED = textwrap.dedent("""
    import sys
    import numpy as np
    from tfface.export import ExportedModel
    folder, images, out = sys.argv[1:]
    for backend in ("savedmodel", "tflite"):
        np.savez(f"{out}-{backend}.npz", **ExportedModel(folder, backend)(np.load(images)))
""")


@pytest.mark.slow
def test_exported_models_in_fresh_process_match_keras(toy_export, toy_images, tmp_path):
    model, folder = toy_export
    np.save(tmp_path / "images.npy", toy_images)
    subprocess.run([sys.executable, "-c", RUN_EXPORTED, str(folder), str(tmp_path / "images.npy"),
                    str(tmp_path / "out")], check=True, capture_output=True)
    reference = export.KerasInference(model)(toy_images)
    for backend in ("savedmodel", "tflite"):
        with np.load(tmp_path / f"out-{backend}.npz") as exported:
            assert sorted(exported.files) == sorted(export.OUTPUT_DOCS)
            for name in export.OUTPUT_DOCS:
                assert exported[name].shape == reference[name].shape, name
                assert_close_scaled(exported[name], reference[name], f"{backend} {name}")
                worst = np.abs(exported[name] - reference[name]).max() / max(1.0, np.abs(reference[name]).max())
                print(f"{backend:10s} {name:24s} max |difference| / scale = {worst:.1e}")
    # The fit is well posed: a proper rotation and a non-trivial camera in front of the face.
    np.testing.assert_allclose(np.linalg.det(reference["R"]), 1.0, atol=1e-4)
    assert np.all(reference["K"][:, 0, 0] > 10) and np.all(reference["K"][:, 1, 1] > 10)
    assert np.all(np.isfinite(reference["vertices"]))


def test_tflite_model_uses_builtin_ops_only(toy_export):
    _, folder = toy_export
    report = tf.lite.experimental.Analyzer.analyze(model_path=str(folder / export.EXTRAS / "model.tflite"),
                                                   gpu_compatibility=False) or ""
    metadata = json.loads((folder / export.EXTRAS / "tfface.json").read_text())
    assert metadata["tflite_outputs"] == sorted(export.OUTPUT_DOCS)
    assert "Flex" not in report and "CUSTOM" not in report


@pytest.fixture(scope="session")
def loaded_export(toy_export):
    """The toy SavedModel loaded in this process (once per session)."""
    if "loaded" not in _TOY_EXPORT:
        _TOY_EXPORT["loaded"] = tf.saved_model.load(str(toy_export[1]))
    return _TOY_EXPORT["loaded"]


def test_serving_signature_takes_uint8_images_and_returns_documented_outputs(loaded_export):
    assert set(loaded_export.signatures) == {"serving_default"}
    signature = loaded_export.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert set(signature.structured_outputs) == set(export.OUTPUT_DOCS)


def test_export_refuses_unconfigured_model_existing_version_and_built_model(toy_export, toy_uv_model, tmp_path):
    model, folder = toy_export
    with pytest.raises(InputError, match="already exists"):
        export.export_model(model, folder.parent.parent, "toy", 1)
    with pytest.raises(InputError, match="version"):
        export.export_model(model, tmp_path, "toy", 0)
    uv_path = tmp_path / "uv.npz"
    toy_uv_model.save(uv_path)
    raw = FaceModel(str(uv_path), TOY_CONFIG)
    raw(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]))
    with pytest.raises(InputError, match="configure"):
        export.export_model(raw, tmp_path, "toy", 1)
    with pytest.raises(InputError, match="not built"):
        export.configure_for_inference(raw)


def test_exported_model_rejects_bad_input_and_bad_folders(toy_export, tmp_path):
    _, folder = toy_export
    runner = export.ExportedModel(folder, "savedmodel")
    with pytest.raises(InputError, match="uint8"):
        runner(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        runner(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ModelFileError, match="not an exported"):
        export.ExportedModel(tmp_path)
    with pytest.raises(InputError, match="backend"):
        export.ExportedModel(folder, "onnx")


@pytest.mark.slow
def test_load_trained_model_restores_weights_and_reports_bad_files(toy_export, tmp_path):
    model, _ = toy_export
    weights = tmp_path / "toy.weights.h5"
    model.save_weights(weights)
    restored = export.load_trained_model(weights, model.uv_model_path, TOY_CONFIG)
    images = np.full((1, IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.uint8)
    np.testing.assert_array_equal(export.KerasInference(restored)(images)["depth"],
                                  export.KerasInference(model)(images)["depth"])
    # A network trained in mixed bfloat16 has the same (float32) weights and is exported in float32.
    from_mixed = export.load_trained_model(weights, model.uv_model_path, TOY_CONFIG.replace(mixed_precision=True))
    assert from_mixed.unet.get_layer("down0_conv0").compute_dtype == "float32"
    np.testing.assert_array_equal(export.KerasInference(from_mixed)(images)["depth"],
                                  export.KerasInference(model)(images)["depth"])
    with pytest.raises(ModelFileError, match="does not exist"):
        export.load_trained_model(tmp_path / "missing.weights.h5", model.uv_model_path, TOY_CONFIG)
    (tmp_path / "bad.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelFileError, match="cannot load"):
        export.load_trained_model(tmp_path / "bad.weights.h5", model.uv_model_path, TOY_CONFIG)


@pytest.mark.slow
def test_export_command_finds_config_and_uv_model_in_the_work_folder(toy_export, toy_images, tmp_path):
    import argparse
    import shutil

    from tfface import export_commands

    model, _ = toy_export
    work = tmp_path / "run"
    (work / "train").mkdir(parents=True)
    (work / "config.json").write_text(TOY_CONFIG.to_json())
    shutil.copy(model.uv_model_path, work / "uv3dmm.npz")
    model.save_weights(work / "train" / "final.weights.h5")
    parser = argparse.ArgumentParser()
    export_commands.register(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["export", *map(str, argv)])
        return args.func(args)

    assert run("--weights", work / "train" / "final.weights.h5", "--name", "cli", "--version", 2,
               "--out", tmp_path / "models", "--no-tflite", "--locator-resolution", 16) == 0
    exported = export.ExportedModel(tmp_path / "models" / "cli" / "2")(toy_images)
    assert_close_scaled(exported["vertices"], export.KerasInference(model)(toy_images)["vertices"], "vertices")
    with pytest.raises(ModelFileError, match="no TFLite model"):
        export.ExportedModel(tmp_path / "models" / "cli" / "2", "tflite")
    with pytest.raises(InputError, match="--name, --version"):
        run("--weights", work / "train" / "final.weights.h5")


def test_relocated_uv_model_samples_identically(toy_uv_model):
    coarse = export.relocated(toy_uv_model, 12)
    assert coarse.locator.children.shape[0] < toy_uv_model.locator.children.shape[0]
    uv = tf.random.stateless_uniform([2, 2000, 2], seed=[3, 4], minval=-0.05, maxval=1.05)
    fine_sample, coarse_sample = toy_uv_model.sample(uv), coarse.sample(uv)
    np.testing.assert_array_equal(coarse_sample.valid.numpy(), fine_sample.valid.numpy())
    for name in ("mean", "basis", "albedo_mean", "albedo_basis"):
        np.testing.assert_allclose(getattr(coarse_sample, name).numpy(), getattr(fine_sample, name).numpy(),
                                   atol=1e-5, err_msg=name)
