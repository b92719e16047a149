"""The full model: exact fit on ground-truth maps, inference outputs, train_step, landmarks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.data.synthetic import SynthesisConfig, SyntheticFaces
from tfface.errors import InputError
from tfface.geometry.camera import centred_intrinsics, compose_inverse_camera, project
from tfface.model import FIT_ILL_POSED, FIT_IMPLAUSIBLE_CAMERA, FIT_OK, FaceModel, direct_landmarks, project_points
from tfface.training import metrics
from tfface.training.config import CONFIGS
from tfface.training.evaluation import GROUND_TRUTH_DEPTH_UNIT, fit_floor, ground_truth_maps

SIZE = 48


@pytest.fixture(scope="module")
def faces(default_uv_model):
    """Four synthetic 48 px faces with ground truth (moderate pose)."""
    source = SyntheticFaces(default_uv_model, SynthesisConfig(image_size=SIZE, max_yaw=25, max_roll=25))
    return next(iter(source.dataset(4, seed=3, batch_size=4).batch(4)))


def test_fit_on_ground_truth_maps_recovers_camera_shape_and_landmarks(default_uv_model, faces):
    model = tiny_full_model(default_uv_model, 1e-4, num_samples=400)
    fit = tf.function(model.fit_maps)(faces["image"], ground_truth_maps(faces))
    out = model.outputs_of(fit)
    # depth entered in metres, so the fitted depth scale psi is 1 / 1000
    np.testing.assert_allclose(out["psi"].numpy(), 1 / GROUND_TRUTH_DEPTH_UNIT, rtol=1e-3)
    truth = np.concatenate([faces["shape_coefficients"], faces["expression_coefficients"]], -1)
    np.testing.assert_allclose(fit["coefficients"].numpy(), truth, atol=0.05)
    assert np.all(metrics.nme68(out["landmarks68"].numpy(), faces["landmarks68"].numpy()) < 2e-3)
    np.testing.assert_allclose(out["R"].numpy(), faces["R"].numpy(), atol=1e-3)
    assert fit_floor(model, [faces])["nme68"] < 2e-3


def test_fit_floor_of_a_truncated_model_is_higher(default_uv_model, faces):
    """The faces use every mode: fitting 40 + 20 of them leaves a landmark error a perfect network
    cannot remove (the reason the small config fits all modes)."""
    floors = {}
    for modes in [(None, None), (40, 20)]:
        config = CONFIGS["small"].replace(image_size=SIZE, num_shape=modes[0], num_expression=modes[1],
                                          num_samples=400)
        model = FaceModel(default_uv_model, config)
        model.geometric.translation_weight.assign(0.0)
        floors[modes] = fit_floor(model, [faces])
        assert floors[modes]["count"] == 4
    assert floors[(40, 20)]["nme68"] > 1.5 * floors[(None, None)]["nme68"]
    assert floors[(None, None)]["nme68"] < 0.03


def test_inference_outputs_shapes_and_finiteness(default_uv_model, faces):
    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE))
    out = tf.function(model.infer)(faces["image"])
    m = model.uv_model.model
    expected = {"correspondence": (4, SIZE, SIZE, 2), "depth": (4, SIZE, SIZE), "confidence": (4, SIZE, SIZE, 2),
                "K": (4, 3, 3), "R": (4, 3, 3), "t": (4, 3), "psi": (4,), "shape_coefficients": (4, m.num_shape),
                "expression_coefficients": (4, m.num_expression), "albedo_coefficients": (4, m.num_albedo),
                "lighting": (4, 3, 9), "vertices": (4, m.num_vertices, 3), "landmarks68": (4, 68, 2),
                "landmarks5": (4, 5, 2), "direct_landmarks68": (4, 68, 2), "direct_landmarks5": (4, 5, 2),
                "fit_valid": (4,), "fit_status": (4,), "camera_fixed": (4,), "upright_fit": (4,)}
    for key, shape in expected.items():
        assert tuple(out[key].shape) == shape, key
        assert np.all(np.isfinite(out[key].numpy())), key


def zero_confidence_model(uv_model) -> FaceModel:
    """A tiny model whose network predicts confidence 0 (sigmoid(-100)) at every pixel."""
    model = FaceModel(uv_model, CONFIGS["tiny"].replace(image_size=SIZE))
    logits = model.unet.get_layer("logits")
    kernel, _ = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.array([0.0, 0.0, 1.0, -100.0, -100.0], np.float32)])
    return model


@pytest.mark.parametrize("compiled", [True, False])
def test_a_network_without_confidence_gives_a_failed_fit_not_an_error(default_uv_model, faces, compiled):
    """Issue 22, finding 3: FaceModel.infer raised "Input matrix is not invertible" (compiled) or
    SolveError (eagerly) on images without confident pixels. Now each says its fit failed."""
    model = zero_confidence_model(default_uv_model)
    out = (tf.function(model.infer) if compiled else model.infer)(faces["image"])
    assert all(np.all(np.isfinite(value.numpy())) for value in out.values())
    np.testing.assert_array_equal(out["fit_valid"].numpy(), 0.0)
    np.testing.assert_array_equal(out["fit_status"].numpy(), FIT_ILL_POSED)


def test_degenerate_maps_fail_alone_in_a_batch(default_uv_model, faces):
    """Ground-truth maps of four faces, image 1 without confidence and image 2 with one
    correspondence everywhere (issue 22, finding 1: all samples on one model point, a singular
    system): their fits fail, the others are exact, and every output is finite."""
    maps = ground_truth_maps(faces).numpy()
    maps[1, ..., 3:5] = 0.0
    maps[2, ..., 0:2] = maps[2, SIZE // 2, SIZE // 2, 0:2]
    model = tiny_full_model(default_uv_model, 1e-4, num_samples=400)
    out = tf.function(lambda images, m: model.outputs_of(model.fit_maps(images, m, inference=True)))(
        faces["image"], tf.constant(maps))
    assert all(np.all(np.isfinite(value.numpy())) for value in out.values())
    np.testing.assert_array_equal(out["fit_valid"].numpy(), [1, 0, 0, 1])
    status = out["fit_status"].numpy()
    assert status[1] == FIT_ILL_POSED and status[2] in (FIT_ILL_POSED, FIT_IMPLAUSIBLE_CAMERA)
    assert np.all(metrics.nme68(out["landmarks68"].numpy()[[0, 3]], faces["landmarks68"].numpy()[[0, 3]]) < 2e-3)


def tiny_full_model(uv_model, omega, **overrides) -> FaceModel:
    """A 48 px model fitting every mode, all coefficient prior weights ``omega``, no translation prior."""
    config = CONFIGS["tiny"].replace(image_size=SIZE, num_shape=None, num_expression=None, **overrides)
    model = FaceModel(uv_model, config)
    model.regularizer.omega.assign(tf.fill(model.regularizer.omega.shape, omega))
    model.geometric.translation_weight.assign(0.0)
    return model


def _faces_at_focal(uv_model, focal_widths: float, count: int, seed: int) -> dict[str, tf.Tensor]:
    """``count`` synthetic 48 px faces (moderate pose) seen by cameras of focal length
    ``focal_widths`` image widths."""
    config = SynthesisConfig(image_size=SIZE, max_yaw=25, max_roll=25, focal_range=(focal_widths, focal_widths))
    return next(iter(SyntheticFaces(uv_model, config).dataset(count, seed=seed, batch_size=count).batch(count)))


def test_a_fit_under_known_centred_intrinsics_is_exact(default_uv_model):
    """Faces taken by the natural camera of focal length 2.3 widths, fitted under those intrinsics
    (the fallback's solve): camera, rotation and landmarks as the truth."""
    faces = _faces_at_focal(default_uv_model, 2.3, 3, seed=3)
    model = tiny_full_model(default_uv_model, 1e-4)
    intrinsics = centred_intrinsics(2.3, SIZE, 3)
    fit = tf.function(lambda images, maps: model.fit_maps(images, maps, inference=True, intrinsics=intrinsics))(
        faces["image"], ground_truth_maps(faces))
    np.testing.assert_allclose(fit["K"].numpy(), faces["K"].numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fit["R"].numpy(), faces["R"].numpy(), atol=1e-3)
    assert np.all(metrics.nme68(model.outputs_of(fit)["landmarks68"].numpy(), faces["landmarks68"].numpy()) < 2e-3)


@pytest.mark.parametrize("compiled", [True, False])
def test_the_inference_fit_falls_back_on_a_fixed_camera_only_where_the_free_one_is_implausible(
        default_uv_model, compiled):
    """Four faces at a focal length of 2.3 widths, one at 150 (beyond any real lens: its exact free
    fit is an implausible camera) and one without confident pixels (ill posed: no face). Only the
    150-width face is fitted again, under the fixed camera, and that fit is kept; every other
    output is the free fit's."""
    near, far = _faces_at_focal(default_uv_model, 2.3, 4, seed=3), _faces_at_focal(default_uv_model, 150.0, 2, seed=4)
    images = tf.concat([near["image"], far["image"]], 0)
    maps = ground_truth_maps({name: tf.concat([near[name], far[name]], 0) for name in near}).numpy()
    maps[5, ..., 3:5] = 0.0
    maps = tf.constant(maps)
    free = tiny_full_model(default_uv_model, 1e-4)
    with_fallback = tiny_full_model(default_uv_model, 1e-4, inference_fallback_focal=2.3)
    run = tf.function if compiled else (lambda f: f)
    reference = free.outputs_of(run(free.inference_fit)(images, maps))
    np.testing.assert_array_equal(reference["fit_status"].numpy(), [FIT_OK] * 4 + [FIT_IMPLAUSIBLE_CAMERA, FIT_ILL_POSED])

    fit = run(with_fallback.inference_fit)(images, maps)
    out = with_fallback.outputs_of(fit)
    np.testing.assert_array_equal(fit["camera_fixed"].numpy(), [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(out["fit_status"].numpy(), [FIT_OK] * 5 + [FIT_ILL_POSED])
    fixed = with_fallback.outputs_of(with_fallback.fit_maps(images[4:5], maps[4:5], inference=True,
                                                            intrinsics=centred_intrinsics(2.3, SIZE, 1)))
    for name, value in out.items():
        expected = np.concatenate([reference[name].numpy()[:4], fixed[name].numpy(), reference[name].numpy()[5:]])
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(out["K"].numpy()[4], centred_intrinsics(2.3, SIZE, 1).numpy()[0], rtol=1e-5, atol=1e-3)


def test_infer_reports_the_fallback(default_uv_model, faces):
    """``camera_fixed`` is an inference output: 0 for every face of a plausible camera, with or
    without the fallback."""
    for focal in (None, 2.3):
        model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE, inference_fallback_focal=focal))
        out = tf.function(model.infer)(faces["image"])
        assert out["camera_fixed"].shape == (4,)
        np.testing.assert_array_equal(out["camera_fixed"].numpy()[out["fit_status"].numpy() == FIT_OK], 0.0)


def test_inference_fit_on_every_pixel_estimates_the_training_fit(default_uv_model, faces):
    """With a prior strong enough to matter, the weighted lattice fit of every pixel lands on the
    average of random 200-sample fits (the training fit), not on fits of more samples, whose data
    outweighs the prior more."""
    maps = ground_truth_maps(faces)
    average = {}
    for samples in (200, 1600):
        fit = tf.function(tiny_full_model(default_uv_model, 100.0, num_samples=samples).fit_maps)
        average[samples] = np.mean([fit(faces["image"], maps)["coefficients"].numpy() for _ in range(8)], axis=0)
    model = tiny_full_model(default_uv_model, 100.0, num_samples=200, inference_prior_scale=1.0)
    inference = tf.function(lambda images, m: model.fit_maps(images, m, inference=True))
    first = inference(faces["image"], maps)["coefficients"].numpy()
    np.testing.assert_array_equal(first, inference(faces["image"], maps)["coefficients"].numpy())  # deterministic
    gap = np.abs(first - average[200]).mean()
    assert gap < 0.25 * np.abs(average[1600] - average[200]).mean()


def test_inference_prior_scale_multiplies_the_coefficient_prior(default_uv_model, faces):
    maps = ground_truth_maps(faces)
    coefficients = []
    for omega, scale in ((30.0, 4.0), (120.0, 1.0)):
        model = tiny_full_model(default_uv_model, omega, num_samples=200, inference_prior_scale=scale)
        coefficients.append(model.fit_maps(faces["image"], maps, inference=True)["coefficients"].numpy())
        training = model.fit_maps(faces["image"], maps)["coefficients"].numpy()  # training fits are unscaled
    np.testing.assert_allclose(coefficients[0], coefficients[1], rtol=1e-4, atol=1e-5)
    assert np.abs(training - coefficients[1]).max() > 100 * np.abs(coefficients[0] - coefficients[1]).max()
    with pytest.raises(InputError, match="inference_prior_scale"):
        tiny_full_model(default_uv_model, 1.0, inference_prior_scale=0.0)


def test_translation_prior_pulls_the_training_fit_and_never_the_inference_fit(default_uv_model, faces):
    """The early camera-translation regulariser holds the camera centre at ``(0, 0, z0)``, in front
    of the face: training fits feel it, the inference fit recovers the rendering camera whatever
    weight the schedule left in the layer."""
    maps = ground_truth_maps(faces)
    model = tiny_full_model(default_uv_model, 1e-4, num_samples=400, inference_prior_scale=1.0, robust_refits=0)
    model.geometric.translation_weight.assign(1e6)
    training = model.outputs_of(model.fit_maps(faces["image"], maps))
    inference = model.outputs_of(model.fit_maps(faces["image"], maps, inference=True))
    np.testing.assert_allclose(inference["R"].numpy(), faces["R"].numpy(), atol=1e-3)
    assert np.all(metrics.nme68(inference["landmarks68"].numpy(), faces["landmarks68"].numpy()) < 2e-3)
    assert np.abs(training["R"].numpy() - faces["R"].numpy()).max() > 0.05
    np.testing.assert_allclose(training["q_hat"].numpy()[:, :2], 0.0, atol=5.0)  # pulled in front of the face


def test_robust_refits_drop_outlying_correspondences(default_uv_model, faces):
    """10% of the face pixels get correspondences 0.05 UV off: re-solving without the samples
    beyond tau_geometric brings the landmarks closer."""
    maps = ground_truth_maps(faces).numpy()
    rng = np.random.default_rng(0)
    for b, mask in enumerate(faces["mask"].numpy() > 0):
        rows, cols = np.nonzero(mask)
        moved = rng.choice(len(rows), len(rows) // 10, replace=False)
        maps[b, rows[moved], cols[moved], 0:2] += 0.05
    errors = {}
    for refits in (0, 2):
        model = tiny_full_model(default_uv_model, 100.0, num_samples=400, robust_refits=refits,
                                inference_prior_scale=1.0)
        out = model.outputs_of(model.fit_maps(faces["image"], tf.constant(maps), inference=True))
        errors[refits] = metrics.nme68(out["landmarks68"].numpy(), faces["landmarks68"].numpy())
    assert np.all(errors[2] < errors[0])
    assert errors[2].mean() < 0.8 * errors[0].mean()


def test_inlier_weights_keep_poor_fits_whole(default_uv_model):
    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE))  # tau_geometric 10 mm
    weights = tf.constant([[1.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    residual = tf.constant([[[0, 0, 3.0], [0, 4.0, 0], [12.0, 0, 0], [0, 0, 9.9]],
                            [[11.0, 0, 0], [0, 20.0, 0], [0, 0, 1.0], [2.0, 0, 0]]])
    np.testing.assert_array_equal(model.inlier_weights(weights, residual).numpy(),
                                  [[1.0, 2.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    residual = tf.concat([residual[:1], residual[1:] * 10.0], axis=0)  # image 1: only a quarter inlying
    np.testing.assert_array_equal(model.inlier_weights(weights, residual).numpy()[1], [1.0, 1.0, 1.0, 1.0])


@pytest.mark.slow
@pytest.mark.parametrize("mixed_precision", [False, True])
def test_train_step_updates_network_and_adaptive_state(default_uv_model, faces, mixed_precision):
    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE, mixed_precision=mixed_precision))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build_for_training()
    hidden = model.unet.get_layer("down0_conv0")
    assert hidden.compute_dtype == ("bfloat16" if mixed_precision else "float32")
    assert hidden.variable_dtype == "float32"  # the optimizer updates float32 master weights
    assert model.predict_maps(faces["image"]).dtype == tf.float32  # the solves get float32 maps
    before = [w.numpy().copy() for w in model.unet.trainable_weights]
    omega = model.regularizer.omega.numpy().copy()
    history = model.fit(tf.data.Dataset.from_tensors(faces["image"]).repeat(), steps_per_epoch=2, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert int(model.regularizer.iterations.numpy()) == 2
    assert not np.allclose(model.regularizer.omega.numpy(), omega)
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.unet.trainable_weights)]
    assert all(changed)
    for key in ("loss", "geometric", "photometric", "statistical"):
        assert np.isfinite(history.history[key][-1]), key


@pytest.mark.parametrize("images", [np.zeros((1, SIZE, SIZE, 1), np.float32), np.zeros((1, SIZE, SIZE, 4), np.float32),
                                    np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, SIZE, SIZE, 3), np.uint8),
                                    np.full((1, SIZE, SIZE, 3), np.nan, np.float32)])
def test_bad_images_raise_input_error(default_uv_model, images):
    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE))
    with pytest.raises(InputError):
        model.infer(images)


def test_project_points_of_a_singular_inverse_camera_are_finite():
    points = np.random.default_rng(0).normal(scale=50.0, size=(2, 5, 3)).astype(np.float32)
    p_hat = np.stack([np.zeros((3, 3)), [[1.0, 2, 3], [2, 4, 6], [0, 0, 1]]]).astype(np.float32)  # rank 0 and 2
    assert np.all(np.isfinite(project_points(points, p_hat, np.zeros((2, 3), np.float32)).numpy()))


def test_project_points_matches_the_camera_projection():
    rng = np.random.default_rng(0)
    K = np.array([[[300.0, 0.0, 64.0], [0.0, 310.0, 60.0], [0.0, 0.0, 1.0]]], np.float32)
    angle = 0.3
    R = np.array([[[np.cos(angle), 0, np.sin(angle)], [0, -1, 0], [np.sin(angle), 0, -np.cos(angle)]]], np.float32)
    t = np.array([[5.0, -3.0, 600.0]], np.float32)
    points = rng.normal(scale=50.0, size=(1, 20, 3)).astype(np.float32)
    p_hat, q_hat = compose_inverse_camera(K, R, t, tf.constant([0.004]))
    expected, _ = project(points, K, R, t)
    np.testing.assert_allclose(project_points(points, p_hat, q_hat).numpy(), expected.numpy(), atol=2e-3)


def test_direct_landmarks_find_the_pixel_with_the_landmark_uv():
    maps = np.zeros((1, 8, 8, 5), np.float32)
    rng = np.random.default_rng(1)
    maps[..., 0:2] = rng.uniform(0.3, 0.7, size=(1, 8, 8, 2))
    maps[..., 3] = 1.0
    landmark_uv = np.array([[0.05, 0.1], [0.9, 0.95]], np.float32)
    maps[0, 2, 5, 0:2] = landmark_uv[0]  # row 2, col 5 -> pixel centre (5.5, 2.5)
    maps[0, 6, 1, 0:2] = landmark_uv[1]
    found = direct_landmarks(tf.constant(maps), tf.constant(landmark_uv), sigma=0.01).numpy()
    np.testing.assert_allclose(found[0], [[5.5, 2.5], [1.5, 6.5]], atol=1e-4)


def test_tensorboard_panels_are_images_in_unit_range(default_uv_model, faces):
    from tfface.training.callbacks import summary_panels

    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE))
    panels = tf.function(lambda x: summary_panels(model, x))(faces["image"])
    assert set(panels) == {"input", "reconstruction", "geometry", "correspondence", "confidence", "depth", "residual"}
    for name, panel in panels.items():
        values = panel.numpy()
        assert values.shape == (4, SIZE, SIZE, 3), name
        assert np.all(np.isfinite(values)) and values.min() >= 0.0 and values.max() <= 1.0, name


@pytest.mark.slow
def test_evaluation_on_aflw2k3d_mock_data_gives_landmark_nme(default_uv_model, tmp_path):
    """The reported NMEs are those of the model's landmarks against the dataset's, image by image:
    the direct ones over every image, the fitted ones over the images whose fit is valid, with
    the others counted as failed beside them."""
    import tensorflow_datasets as tfds

    from tfface.data.tfds_sources import aflw2k3d_dataset
    from tfface.training.evaluation import evaluate_batches

    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE))
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        batches = list(aflw2k3d_dataset("train", SIZE, str(tmp_path)).take(4).batch(2))
    results = evaluate_batches(model, batches)
    images = tf.concat([b["image"] for b in batches], 0)
    truth = np.concatenate([b["landmarks68"].numpy() for b in batches])
    out = tf.function(model.infer)(images)
    direct = metrics.nme68(out["direct_landmarks68"].numpy(), truth)
    fitted = metrics.nme68(out["landmarks68"].numpy(), truth)
    valid = out["fit_valid"].numpy() > 0
    assert results["count"] == 4 and "correspondence_uv" not in results  # no dense ground truth on real images
    np.testing.assert_allclose(results["direct_nme68"], direct.mean(), rtol=1e-5)
    assert results["direct_nme68_failed"] == 0
    assert results["failed"] == results["nme68_failed"] == int((~valid).sum())
    assert results["failed_share"] == (~valid).mean()
    if valid.any():
        np.testing.assert_allclose(results["nme68"], fitted[valid].mean(), rtol=1e-5)
    else:
        assert np.isnan(results["nme68"])


def test_repeated_evaluations_reuse_one_compiled_fit(default_uv_model, faces):
    """Periodic evaluation must not trace the fit anew each time (about 2.5 s a trace); the
    cache lets the model go."""
    import gc
    import weakref

    from tfface.training.evaluation import _COMPILED, compiled_outputs, evaluate_batches

    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE))
    first = evaluate_batches(model, [faces])
    second = evaluate_batches(model, [faces])
    np.testing.assert_equal(first, second)  # NaN (no valid fit of the untrained model) equals NaN here
    assert first["count"] == 4
    function = compiled_outputs(model)
    assert function is compiled_outputs(model)
    assert function.experimental_get_tracing_count() == 1
    assert compiled_outputs(model, "training") is not function
    with pytest.raises(InputError, match="sampling"):
        compiled_outputs(model, "bogus")
    alive = weakref.ref(model)
    gc.collect()  # let models of earlier tests leave the cache first
    entries = len(_COMPILED)
    del model, function
    gc.collect()
    assert alive() is None and len(_COMPILED) == entries - 1
