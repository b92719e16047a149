"""The upright pass: turns about the image centre, maps turned back, the camera's roll, the model's use.

The model-level tests use the transparent toy network of :mod:`test_export`, whose maps are a fixed
function of each pixel's colour: a face's maps turn with its image, so the turned-back maps of the
upright crop are the crop's own maps up to interpolation, and the plumbing of the pass (angles,
directions, which fit is kept) is checked against known answers.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry.camera import project
from tfface.io.records import head_pose_degrees
from tfface.upright_pass import camera_roll, maps_turned_back, source_pixels, turn_about_centre
from test_export import TOY_CONFIG, assert_close_scaled, rendered_toy_faces, toy_camera, transparent_toy_model

#: Two toy faces turned in the picture's plane, 30 and -60 degrees: (focal px, centre px, yaw deg, t mm, roll deg).
TURNED_CAMERAS = ((512.0, (32.0, 32.0), 0.0, (0.0, 0.0, 600.0), 30.0),
                  (480.0, (32.0, 32.0), 10.0, (0.0, 0.0, 620.0), -60.0))


def test_turns_of_a_quarter_are_exact_and_zero_is_the_identity():
    images = np.random.default_rng(0).uniform(0.0, 1.0, (3, 6, 6, 2)).astype(np.float32)
    angle = tf.constant([0.0, np.pi / 2, -np.pi / 2])
    turned = turn_about_centre(images, angle).numpy()
    np.testing.assert_allclose(turned[0], images[0], atol=1e-6)
    # Counter-clockwise on screen (rows down) is numpy's rot90 of the rows and columns.
    np.testing.assert_allclose(turned[1], np.rot90(images[1], 1, axes=(0, 1)), atol=1e-5)
    np.testing.assert_allclose(turned[2], np.rot90(images[2], -1, axes=(0, 1)), atol=1e-5)
    with pytest.raises(InputError, match="static height and width"):
        turn_about_centre(tf.zeros([2, 6, 6]), tf.zeros([2]))


def test_a_turned_image_shows_each_source_point_turned_about_the_centre():
    size, angle = 40, 0.4
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    image = np.stack([xs, ys], -1)[None].astype(np.float32)  # each pixel holds its own position
    turned = turn_about_centre(image, tf.constant([angle])).numpy()[0]
    source = source_pixels(tf.constant([angle]), size, size).numpy()[0]
    inside = np.all((source >= 0.5) & (source <= size - 0.5), axis=-1)
    np.testing.assert_allclose(turned[inside], source[inside], atol=1e-4)  # bilinear is exact on linear images
    # A source point s shows at c + Rot(-angle) (s - c): turned counter-clockwise on screen (y down).
    c, s = size / 2, np.array([30.0, 20.0])
    rot = np.array([[np.cos(-angle), -np.sin(-angle)], [np.sin(-angle), np.cos(-angle)]])
    shown = c + rot @ (s - c)
    assert shown[1] < s[1]  # a point right of the centre moves up
    pixel = np.floor(shown).astype(int)
    np.testing.assert_allclose(turned[pixel[1], pixel[0]], s + rot.T @ (pixel + 0.5 - shown), atol=1e-3)


def test_maps_turned_back_are_the_maps_where_covered_and_unconfident_elsewhere():
    size, angle = 32, np.radians(35.0)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    linear = np.stack([0.01 * xs, 0.02 * ys, 1.0 + 0.003 * ys, np.ones_like(xs), np.ones_like(xs)], -1)
    maps = linear[None].astype(np.float32)
    back = maps_turned_back(turn_about_centre(maps, tf.constant([angle])), tf.constant([angle])).numpy()[0]
    radius = np.hypot(xs - size / 2, ys - size / 2)
    disc = radius < size / 2 - 1.0  # the turned image covers this disc, away from the clamped edges
    np.testing.assert_allclose(back[disc], maps[0][disc], atol=1e-4)
    corners = radius > size / 2 * np.sqrt(2) - 2.0
    assert corners.any() and np.all(back[corners][:, 3:5] == 0.0)  # not covered: confidence 0
    unturned = maps_turned_back(maps, tf.constant([0.0])).numpy()[0]
    np.testing.assert_allclose(unturned, maps[0], atol=1e-6)


@pytest.mark.parametrize("yaw,roll", [(0.0, 0.0), (20.0, 35.0), (-50.0, -80.0), (70.0, 150.0)])
def test_camera_roll_is_the_records_roll_and_turns_the_face_upright(yaw, roll):
    K, R, t = toy_camera(500.0, (32.0, 32.0), yaw, (0.0, 0.0, 600.0), roll)
    measured = camera_roll(tf.constant(R[None], tf.float32)).numpy()[0]
    assert np.degrees(measured) == pytest.approx(roll, abs=1e-3)
    assert head_pose_degrees(R)["roll"] == pytest.approx(roll, abs=1e-3)
    # Points of the rolled camera, turned by -roll about the principal point, are the upright camera's.
    points = np.random.default_rng(1).uniform(-80.0, 80.0, (20, 3)).astype(np.float32)
    rolled, _ = project(points[None], K[None], R[None], t[None])
    _, upright_R, _ = toy_camera(500.0, (32.0, 32.0), yaw, (0.0, 0.0, 600.0))
    upright, _ = project(points[None], K[None], upright_R[None], t[None])
    angle = -measured
    rot = np.array([[np.cos(-angle), -np.sin(-angle)], [np.sin(-angle), np.cos(-angle)]])  # where a source point shows
    np.testing.assert_allclose(32.0 + (rolled.numpy()[0] - 32.0) @ rot.T, upright.numpy()[0], atol=1e-3)


@pytest.fixture(scope="module")
def transparent_model(toy_uv_model, tmp_path_factory):
    uv_path = tmp_path_factory.mktemp("upright") / "toy_uv.npz"
    toy_uv_model.save(uv_path)
    return transparent_toy_model(uv_path, TOY_CONFIG.replace(inference_upright_pass=True))


def test_the_upright_pass_fits_a_turned_face_again_in_its_own_frame(transparent_model, toy_uv_model):
    model = transparent_model
    faces = rendered_toy_faces(toy_uv_model, TURNED_CAMERAS)
    images = tf.constant(np.concatenate([faces["images"], np.zeros_like(faces["images"][:1])]), tf.float32) / 255.0
    first = model.fit_with_fallback(images, model.inference_maps(images))
    np.testing.assert_array_equal(model.fit_validity(first)["fit_valid"].numpy(), [1, 1, 0])
    angle = -camera_roll(first["R"]).numpy()
    np.testing.assert_allclose(np.degrees(angle[:2]), [-30.0, 60.0], atol=1.0)  # the first fit knows the roll
    fit = model.inference_fit(images)
    np.testing.assert_array_equal(fit["upright_fit"].numpy(), [1, 1, 0])
    # The reported fit is the fit of the upright crop's maps turned back, in the crop's own frame.
    turned_back = maps_turned_back(model.inference_maps(turn_about_centre(images[:2], angle[:2])), angle[:2])
    np.testing.assert_allclose(fit["maps"].numpy()[:2], turned_back.numpy(), atol=1e-5)
    assert np.abs(fit["maps"].numpy()[:2] - first["maps"].numpy()[:2]).max() > 1e-3  # not the first maps again
    rolls = [head_pose_degrees(R)["roll"] for R in fit["R"].numpy()[:2]]
    np.testing.assert_allclose(rolls, [30.0, -60.0], atol=1.5)
    landmarks = model.fit_landmarks68(fit).numpy()[:2]
    assert np.linalg.norm(landmarks - faces["landmarks68"], axis=-1).mean() < 1.0  # pixels of the 64 px crop
    # No valid first fit, no second: the image without a face keeps its first fit.
    for name in ("maps", "K", "R", "t", "coefficients", "well_posed"):
        np.testing.assert_array_equal(fit[name].numpy()[2], first[name].numpy()[2], err_msg=name)


def test_ground_truth_maps_are_fitted_once(transparent_model, toy_uv_model):
    """Maps given to :meth:`inference_fit` (the fit floor's ground truth) are fitted as they are."""
    faces = rendered_toy_faces(toy_uv_model, ((512.0, (32.0, 32.0), 0.0, (0.0, 0.0, 600.0), 30.0),))
    images = tf.constant(faces["images"], tf.float32) / 255.0
    maps = transparent_model.predict_maps(images)
    fit = transparent_model.inference_fit(images, maps)
    assert fit["upright_fit"].numpy().tolist() == [0.0]
    np.testing.assert_array_equal(fit["maps"].numpy(), maps.numpy())


#: Builds the transparent toy model with the upright pass, exports it (SavedModel and TFLite) and
#: writes the Keras, SavedModel and TFLite outputs of the images: in a process of its own, whose
#: memory (the converter's) goes with it. Arguments: UV-3DMM file, images (.npy), output folder.
EXPORT_AND_RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from tfface import export
    from test_export import TOY_CONFIG, transparent_toy_model
    uv_path, images, out = sys.argv[1], np.load(sys.argv[2]), Path(sys.argv[3])
    model = transparent_toy_model(uv_path, TOY_CONFIG.replace(inference_upright_pass=True))
    folder = export.export_model(model, out / "savedmodel", "upright", 1)
    np.savez(out / "keras.npz", **export.KerasInference(model)(images))
    for backend in ("savedmodel", "tflite"):
        np.savez(out / f"{backend}.npz", **export.ExportedModel(folder, backend)(images))
""")


@pytest.mark.slow
def test_the_upright_pass_exports_to_savedmodel_and_tflite(toy_uv_model, tmp_path):
    """The exported graphs (TFLite: built-in ops only) run the pass as the Keras model does."""
    toy_uv_model.save(tmp_path / "toy_uv.npz")
    faces = rendered_toy_faces(toy_uv_model, TURNED_CAMERAS)
    np.save(tmp_path / "images.npy", np.concatenate([faces["images"], np.zeros_like(faces["images"][:1])]))
    subprocess.run([sys.executable, "-c", EXPORT_AND_RUN, str(tmp_path / "toy_uv.npz"), str(tmp_path / "images.npy"),
                    str(tmp_path)], check=True, capture_output=True, cwd=Path(__file__).parent)
    reference = dict(np.load(tmp_path / "keras.npz"))
    np.testing.assert_array_equal(reference["upright_fit"], [1, 1, 0])
    for backend in ("savedmodel", "tflite"):
        with np.load(tmp_path / f"{backend}.npz") as exported:
            np.testing.assert_array_equal(exported["upright_fit"], reference["upright_fit"], err_msg=backend)
            np.testing.assert_array_equal(exported["fit_valid"], reference["fit_valid"], err_msg=backend)
            for name in ("correspondence", "confidence", "landmarks68", "K", "R", "t", "vertices"):
                assert_close_scaled(exported[name][:2], reference[name][:2], f"{backend} {name}")
