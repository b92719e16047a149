"""Export: SavedModel and TFLite, run in a fresh process, match the Keras model to 1e-4.

The test model is tiny (64 x 64 input, quarter-width U-Net, the toy UV-3DMM, 500 samples). Its
U-Net is made transparent (:func:`transparent_toy_model`): every pixel's colour passes straight to
the output layer, so the predicted maps are a fixed function of each pixel and an image can
encode any maps (:func:`encode_maps`). The toy images encode the correspondence and depth of the
toy mesh rendered by known plausible cameras (:func:`rendered_toy_faces`), so their fits are well
posed with plausible cameras; a black pixel encodes zero confidence (no face).
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
from tfface.geometry.camera import centred_intrinsics, project
from tfface.layers.preprocessing import inverse_softplus_preprocess, softplus_preprocess
from tfface.model import FIT_ILL_POSED, FIT_IMPLAUSIBLE_CAMERA, FIT_OK, FaceModel, fit_validity
from tfface.render.rasterizer import interpolate, rasterize
from tfface.training.config import CONFIGS, TrainConfig

IMAGE_SIZE = 64
#: The toy bump's normals span a narrow cone, so a weak lighting prior leaves some SH bands nearly
#: undetermined; lighting_weight = 1 keeps the photometric solve well conditioned.
#: The export carries the fallback on a fixed camera (``tf.cond``; see :func:`low_relief_toy_face`); the
#: upright pass is exported in :mod:`test_upright_pass`.
TOY_CONFIG = CONFIGS["tiny"].replace(name="toy", image_size=IMAGE_SIZE, width=0.25, num_samples=500, num_shape=4,
                                     num_expression=3, num_albedo=2, lighting_weight=1.0, inference_fallback_focal=2.3)

# The transparent network's output logits, affine in the preprocessed colour p = (p_r, p_g, p_b):
# u = sigmoid(UV_GAIN (p_r - UV_CENTRE)), v likewise from p_g; depth = softplus(DEPTH_GAIN p_b +
# DEPTH_BIAS) + depth_offset; both confidences sigmoid(CONFIDENCE_GAIN (p_b - CONFIDENCE_CENTRE)).
UV_GAIN, UV_CENTRE = 6.0, 0.6
DEPTH_GAIN, DEPTH_BIAS = 2.0, 4.2
CONFIDENCE_GAIN, CONFIDENCE_CENTRE = 30.0, 0.45
#: Rendered depth (mm) per unit of network depth.
DEPTH_UNIT_MM = 100.0

#: Cameras of the two toy faces: (focal length px, principal point px, yaw degrees, t mm).
TOY_CAMERAS = ((512.0, (32.0, 32.0), 0.0, (0.0, 0.0, 600.0)), (480.0, (30.0, 34.0), 12.0, (10.0, -5.0, 620.0)))


def transparent_toy_model(uv_path, config: TrainConfig = TOY_CONFIG) -> FaceModel:
    """A configured toy :class:`FaceModel` (of ``config``, by default :data:`TOY_CONFIG`) whose U-Net
    passes each pixel's preprocessed colour through its first and last scale (identity 3x3 taps,
    unit batch norm, every deeper path zero) to the output layer, which applies the affine map of
    the constants above."""
    model = FaceModel(str(uv_path), config)
    model(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]))
    unet = model.unet
    for layer in unet.layers:
        if isinstance(layer, keras.layers.BatchNormalization):  # (x - 0) / sqrt(1 - eps + eps): identity
            ones = np.ones(layer.gamma.shape, np.float32)
            layer.set_weights([ones, 0 * ones, 0 * ones, (1 - layer.epsilon) * ones])
        elif isinstance(layer, keras.layers.Conv2D):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    last_up = max(layer.name for layer in unet.layers if layer.name.startswith("up") and "_conv" in layer.name)[:-6]
    for name in ("down0_conv0", "down0_conv1", f"{last_up}_conv0", f"{last_up}_conv1"):
        layer = unet.get_layer(name)
        kernel = np.zeros(layer.kernel.shape, np.float32)
        first = kernel.shape[2] - unet.get_layer("down0_conv1").filters if name == f"{last_up}_conv0" else 0
        kernel[1, 1, first + np.arange(3), np.arange(3)] = 1.0  # skip connection's colour channels
        layer.set_weights([kernel])
    logits = unet.get_layer("logits")
    kernel = np.zeros(logits.kernel.shape, np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 1, 1] = UV_GAIN
    kernel[0, 0, 2, 2] = DEPTH_GAIN
    kernel[0, 0, 2, 3] = kernel[0, 0, 2, 4] = CONFIDENCE_GAIN
    bias = np.array([-UV_GAIN * UV_CENTRE] * 2 + [DEPTH_BIAS] + [-CONFIDENCE_GAIN * CONFIDENCE_CENTRE] * 2, np.float32)
    logits.set_weights([kernel, bias])
    return export.inference_model(model)


def _logit(p):
    return np.log(p / (1.0 - p))


def encode_maps(uv: np.ndarray, depth: np.ndarray, face: np.ndarray) -> np.ndarray:
    """uint8 images ``(..., H, W, 3)`` for which the transparent network predicts correspondence
    ``uv`` ``(..., H, W, 2)`` (within [0.1, 0.9]) and network depth ``depth`` ``(..., H, W)``
    with high confidence where ``face`` ``(..., H, W)`` is true; black (zero confidence) elsewhere."""
    xi = softplus_preprocess(1.0).numpy()  # brightest preprocessed value
    p_uv = UV_CENTRE + _logit(np.clip(uv, 0.1, 0.9)) / UV_GAIN
    p_depth = (np.log(np.expm1(depth - TOY_CONFIG.depth_offset)) - DEPTH_BIAS) / DEPTH_GAIN
    preprocessed = np.clip(np.concatenate([p_uv, p_depth[..., None]], -1), softplus_preprocess(0.0).numpy(), xi)
    colour = inverse_softplus_preprocess(tf.constant(preprocessed, tf.float32)).numpy()
    return np.where(face[..., None], np.round(255 * np.clip(colour, 0.0, 1.0)), 0).astype(np.uint8)


def toy_camera(focal: float, centre, yaw_degrees: float, t, roll_degrees: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K, R, t`` of a camera ``yaw_degrees`` around the frontal view (``R = diag(1, -1, -1)``),
    the face then turned ``roll_degrees`` counter-clockwise on screen about the optical axis (the
    roll of :func:`tfface.io.records.head_pose_degrees`)."""
    angle, roll = np.radians(yaw_degrees), np.radians(roll_degrees)
    yaw = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    # Camera coordinates are x right, y down: a turn by -roll about z turns the picture counter-clockwise.
    in_plane = np.array([[np.cos(roll), np.sin(roll), 0], [-np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    K = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]])
    return K, in_plane @ np.diag([1.0, -1.0, -1.0]) @ yaw, np.asarray(t, np.float64)


def rendered_toy_faces(uv_model, cameras=TOY_CAMERAS, size: int = IMAGE_SIZE, relief: float = 1.0
                       ) -> dict[str, np.ndarray]:
    """The toy mesh (mean shape) rendered by ``cameras`` (see :data:`TOY_CAMERAS`), encoded for the
    transparent network: ``images`` (N, S, S, 3) uint8, the true ``K``, ``R``, ``t`` and ``landmarks68``
    (N, 68, 2) pixels. ``relief`` scales the encoded depth about its mean over each face (0: a flat
    depth map, as from a network that sees no relief)."""
    K, R, t = (np.stack(parts).astype(np.float32) for parts in zip(*(toy_camera(*c) for c in cameras)))
    mesh = uv_model.model
    vertices = np.broadcast_to(mesh.mean, (len(cameras), *mesh.mean.shape)).astype(np.float32)
    fragments = rasterize(vertices, mesh.triangles, K, R, t, size, size)
    uv = interpolate(uv_model.vertex_uv.astype(np.float32), mesh.triangles, fragments).numpy()
    face = fragments.mask.numpy() > 0
    depth = fragments.depth.numpy() / DEPTH_UNIT_MM
    mean = np.sum(np.where(face, depth, 0.0), axis=(1, 2), keepdims=True) / np.sum(face, axis=(1, 2), keepdims=True)
    images = encode_maps(uv, np.where(face, mean + relief * (depth - mean), 1.0), face)
    landmarks, _ = project(vertices[:, mesh.landmarks68], K, R, t)
    return {"images": images, "K": K, "R": R, "t": t, "landmarks68": landmarks.numpy()}


@pytest.fixture(scope="session")
def toy_faces(toy_uv_model):
    return rendered_toy_faces(toy_uv_model)


@pytest.fixture(scope="session")
def toy_images(toy_faces):
    return toy_faces["images"]


#: The toy export, built once per session even though several test modules import the fixture.
_TOY_EXPORT: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def toy_export(toy_uv_model, tmp_path_factory):
    """``(keras_model, version_folder)`` of the transparent toy model exported with TFLite."""
    if "toy" not in _TOY_EXPORT:
        root = tmp_path_factory.mktemp("export")
        uv_path = root / "toy_uv.npz"
        toy_uv_model.save(uv_path)
        model = transparent_toy_model(uv_path)
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


def failing_images(toy_faces) -> np.ndarray:
    """Two images whose fits fail: black (no confident pixel) and the first toy face with every
    pixel given one correspondence (all samples on one model point: a singular solve)."""
    constant = toy_faces["images"][:1].copy()
    constant[..., :2] = constant[0, IMAGE_SIZE // 2, IMAGE_SIZE // 2, :2]
    return np.concatenate([np.zeros_like(constant), constant])


def low_relief_toy_face(uv_model) -> dict[str, np.ndarray]:
    """The second toy face with 2% of its depth relief: its free inverse camera is implausible
    (near-orthographic, a focal length of some 140 image widths), so the fit falls back on the
    fixed camera. (Without any relief the free fit is ill posed, at 1% on the border.)"""
    return rendered_toy_faces(uv_model, TOY_CAMERAS[1:], relief=0.02)


@pytest.mark.slow
def test_exported_models_in_fresh_process_match_keras(toy_export, toy_faces, toy_uv_model, tmp_path):
    model, folder = toy_export
    low_relief = low_relief_toy_face(toy_uv_model)
    images = np.concatenate([toy_faces["images"], failing_images(toy_faces), low_relief["images"]])
    np.save(tmp_path / "images.npy", images)
    subprocess.run([sys.executable, "-c", RUN_EXPORTED, str(folder), str(tmp_path / "images.npy"),
                    str(tmp_path / "out")], check=True, capture_output=True)
    reference = export.KerasInference(model)(images)
    # Two faces with valid fits, two failed fits (no confident pixel, one correspondence) and a
    # low-relief face fitted under the fixed camera: the validity agrees exactly across Keras, SavedModel
    # and TFLite like every other output.
    valid = [0, 1, 4]
    np.testing.assert_array_equal(reference["fit_valid"], [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(reference["fit_status"], [FIT_OK, FIT_OK, FIT_ILL_POSED, FIT_ILL_POSED, FIT_OK])
    np.testing.assert_array_equal(reference["camera_fixed"], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(reference["upright_fit"], 0.0)  # no upright pass in this export
    np.testing.assert_allclose(reference["K"][4], centred_intrinsics(2.3, IMAGE_SIZE, 1)[0], rtol=1e-5, atol=1e-3)
    fixed_error = np.linalg.norm(reference["landmarks68"][4] - low_relief["landmarks68"][0], axis=-1).mean()
    assert fixed_error < 3.0, fixed_error  # pixels of the 64 px image
    # A failed fit's camera and mesh are no face and may differ between runtimes: compared are
    # every output of the valid fits, and the network's outputs and the validity of all images.
    network = ("correspondence", "depth", "confidence", "face_score", "fit_valid", "fit_status", "camera_fixed",
               "upright_fit")
    for backend in ("savedmodel", "tflite"):
        with np.load(tmp_path / f"out-{backend}.npz") as exported:
            assert sorted(exported.files) == sorted(export.OUTPUT_DOCS)
            for name in export.OUTPUT_DOCS:
                assert exported[name].shape == reference[name].shape, name
                assert np.all(np.isfinite(exported[name])), f"{backend} {name}"
                compared = slice(None) if name in network else valid
                actual, desired = exported[name][compared], reference[name][compared]
                assert_close_scaled(actual, desired, f"{backend} {name}")
                worst = np.abs(actual - desired).max() / max(1.0, np.abs(desired).max())
                print(f"{backend:10s} {name:24s} max |difference| / scale = {worst:.1e}")
            np.testing.assert_array_equal(exported["fit_valid"], reference["fit_valid"], err_msg=backend)
            np.testing.assert_array_equal(exported["fit_status"], reference["fit_status"], err_msg=backend)
    # The valid fits find the rendering cameras from the 8-bit maps: a proper rotation, the yaw,
    # the focal length, the depth and the landmarks (at a 7-degree field of view the principal
    # point trades off against the rotation, so it is not compared).
    np.testing.assert_allclose(np.linalg.det(reference["R"][:2]), 1.0, atol=1e-4)
    about_frontal = np.diag([1.0, -1.0, -1.0]) @ reference["R"][:2]  # R = diag(1, -1, -1) @ yaw
    yaw = np.degrees(np.arctan2(about_frontal[:, 0, 2], about_frontal[:, 2, 2]))
    np.testing.assert_allclose(yaw, [camera[2] for camera in TOY_CAMERAS], atol=1.0)
    np.testing.assert_allclose(reference["K"][:2, 0, 0], toy_faces["K"][:2, 0, 0], rtol=0.05)
    np.testing.assert_allclose(reference["t"][:2, 2], toy_faces["t"][:2, 2], rtol=0.05)
    error = np.linalg.norm(reference["landmarks68"][:2] - toy_faces["landmarks68"], axis=-1)
    assert np.all(error.mean(axis=1) < 1.0), error.mean(axis=1)  # pixels of the 64 px image


def strewn_landmarks(count: int) -> np.ndarray:
    """``(count, 68, 2)`` landmarks of ``count`` faces whose centroid is the image centre while
    their points lie up to 90 image widths away (a network that sees no face; image02748 of the
    AFLW2000-3D dev photos, a detected crop of a grey photo, gave such a "valid" fit)."""
    offsets = np.linspace(-90.0, 90.0, 68, dtype=np.float32)[:, None] * [1.0, -0.5] * IMAGE_SIZE
    return np.broadcast_to(IMAGE_SIZE / 2 + offsets, (count, 68, 2)).astype(np.float32)


def test_a_fit_with_landmarks_strewn_outside_the_image_is_implausible():
    """A plausible camera, landmarks centred on the image but strewn over 180 image widths: the
    face is not in the image, and the fit is not valid (the old rule judged only the centroid)."""
    K, R, t = (np.stack(parts).astype(np.float32) for parts in zip(*(toy_camera(*c) for c in TOY_CAMERAS)))
    landmarks = np.stack([np.full((68, 2), IMAGE_SIZE / 2, np.float32), strewn_landmarks(1)[0]])
    landmarks[0, 0] = -0.49 * IMAGE_SIZE  # one point cut by the border, within the margin: still in view
    validity = fit_validity(np.ones(2, np.float32), K, R, t, landmarks, float(IMAGE_SIZE))
    np.testing.assert_array_equal(validity["fit_status"].numpy(), [FIT_OK, FIT_IMPLAUSIBLE_CAMERA])
    np.testing.assert_array_equal(validity["fit_valid"].numpy(), [1, 0])


def test_fit_validity_is_judged_for_every_export():
    """An export older than fit_valid returns only the camera, and one older than the strewn
    landmarks rule reports its own status: the same rule applies to both, on top of their own."""
    K, R, t = (np.stack(parts).astype(np.float32) for parts in zip(*(toy_camera(*c) for c in TOY_CAMERAS)))
    eye = np.eye(3, dtype=np.float32)
    landmarks = np.full((6, 68, 2), IMAGE_SIZE / 2, np.float32)
    landmarks[4] += 2 * IMAGE_SIZE  # the face two image widths to the right
    landmarks[5] = strewn_landmarks(1)[0]
    outputs = {"K": np.stack([K[0], K[1], eye, K[0] * [[1e8], [1e8], [1]], K[0], K[0]]),
               "R": np.stack([R[0], R[1], eye, R[0], R[0], R[0]]), "t": np.stack([t[0], t[1], t[0], t[0], t[0], t[0]]),
               "landmarks68": landmarks}
    completed = export.with_fit_validity(outputs, IMAGE_SIZE)
    expected = [FIT_OK, FIT_OK, FIT_ILL_POSED] + [FIT_IMPLAUSIBLE_CAMERA] * 3
    np.testing.assert_array_equal(completed["fit_status"], expected)
    np.testing.assert_array_equal(completed["fit_valid"], [1, 1, 0, 0, 0, 0])
    reported = np.array([FIT_OK, FIT_ILL_POSED, FIT_ILL_POSED, FIT_OK, FIT_OK, FIT_OK], np.float32)
    rejudged = export.with_fit_validity({**outputs, "fit_status": reported, "fit_valid": np.float32(reported == 0)},
                                        IMAGE_SIZE)
    # the export's own failures are kept (image 1), the rule's are added (images 3 to 5)
    np.testing.assert_array_equal(rejudged["fit_status"], [FIT_OK, FIT_ILL_POSED, FIT_ILL_POSED] + [FIT_IMPLAUSIBLE_CAMERA] * 3)
    np.testing.assert_array_equal(rejudged["fit_valid"], [1, 0, 0, 0, 0, 0])


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


def test_an_export_is_loaded_once_per_process(toy_export):
    """TensorFlow never frees a loaded SavedModel's functions: two runners of one export share one load."""
    _, folder = toy_export
    first, second = export.ExportedModel(folder), export.ExportedModel(folder)
    assert first._signature is second._signature


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
    # Without the fallback, which only slows the two exports: no toy image here takes it.
    (work / "config.json").write_text(TOY_CONFIG.replace(inference_fallback_focal=None).to_json())
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
    # A run's pretrained U-Net alone exports the same network.
    (work / "pretrain").mkdir()
    model.unet.save_weights(work / "pretrain" / "unet.weights.h5")
    assert run("--weights", work / "pretrain" / "unet.weights.h5", "--pretrained", "--name", "cli", "--version", 3,
               "--out", tmp_path / "models", "--no-tflite", "--locator-resolution", 16) == 0
    pretrained = export.ExportedModel(tmp_path / "models" / "cli" / "3")(toy_images)
    np.testing.assert_array_equal(pretrained["vertices"], exported["vertices"])
    with pytest.raises(ModelFileError, match="cannot load"):  # a U-Net's weights are not a whole model's
        run("--weights", work / "pretrain" / "unet.weights.h5", "--name", "cli", "--version", 4,
            "--out", tmp_path / "models", "--no-tflite")
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
