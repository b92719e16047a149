"""PhotometricLeastSquares (eqs. 38-41, inverse SH lighting) and camera-space sample normals, on
synthetic samples of the default ICT geometry with known answers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.geometry.sh import sh_basis
from tfface.layers import least_squares_synthetic as synthetic
from tfface.layers.geometric import GeometricLeastSquares, InverseCameraDecomposition
from tfface.layers.photometric import (PhotometricLeastSquares, neutral_lighting, sample_normals,
                                      sample_normals_compiled, solve_photometry)

NUM_ALBEDO = 8
TINY = 1e-6


def f32(array) -> tf.Tensor:
    return tf.constant(array, tf.float32)


@pytest.fixture(scope="module")
def geometry(default_model_path) -> synthetic.Geometry:
    return synthetic.load_ict_geometry(20, 10, default_model_path)


@pytest.fixture(scope="module")
def scene(geometry):
    rng = np.random.default_rng(20)
    shapes = synthetic.geometric_problem(geometry, rng, batch=3, num_samples=1500)
    albedo_model = synthetic.random_albedo_model(rng, len(geometry.mean), NUM_ALBEDO)
    return shapes, synthetic.photometric_problem(shapes, geometry.triangles, albedo_model, rng)


def inputs(colours: synthetic.PhotometricProblem, image=None, weights=None) -> list[tf.Tensor]:
    image = colours.image if image is None else image
    weights = np.ones(image.shape[:2]) if weights is None else weights
    return [f32(image), f32(colours.normals), f32(weights), f32(colours.albedo_mean), f32(colours.albedo_basis)]


def assert_recovers(outputs, colours, tolerance=1e-3):
    rel = synthetic.relative_error
    assert rel(outputs["lighting"].numpy(), colours.lighting).max() < tolerance
    assert rel(outputs["coefficients"].numpy(), colours.coefficients).max() < tolerance
    assert rel(outputs["albedo"].numpy(), colours.albedo).max() < tolerance
    assert rel(outputs["colour"].numpy(), colours.image).max() < tolerance


@pytest.mark.parametrize("solver", ["cholesky", "gauss_jordan"])
def test_noiseless_samples_recover_lighting_and_albedo(scene, solver):
    _, colours = scene
    layer = PhotometricLeastSquares(lighting_weight=TINY, solver=solver)
    outputs = layer(*inputs(colours), coefficient_weights=tf.fill([NUM_ALBEDO], TINY))
    assert_recovers(outputs, colours)
    assert np.abs(outputs["residual"].numpy()).max() < 1e-4
    np.testing.assert_allclose(
        outputs["inverse_shading"].numpy(), colours.albedo / colours.image, rtol=1e-3
    )


def test_pipeline_with_normals_of_the_fitted_shape_and_camera(geometry, scene):
    shapes, colours = scene
    samples = [f32(shapes.pixels), f32(shapes.depth), tf.ones(shapes.depth.shape), f32(shapes.mean), f32(shapes.basis)]
    fit = GeometricLeastSquares()(*samples, coefficient_weights=tf.fill([30], TINY))
    camera = InverseCameraDecomposition()(fit["p_hat"], fit["q_hat"])
    vertices = f32(geometry.mean) + tf.einsum("bk,kvc->bvc", fit["coefficients"], f32(geometry.basis))
    normals = sample_normals(
        vertices, tf.constant(geometry.triangles), tf.constant(shapes.vertex_ids), f32(shapes.barycentrics), camera["R"]
    )
    np.testing.assert_allclose(normals.numpy(), colours.normals, atol=1e-4)
    outputs = PhotometricLeastSquares(lighting_weight=TINY)(
        f32(colours.image), normals, tf.ones(shapes.depth.shape), f32(colours.albedo_mean),
        f32(colours.albedo_basis), tf.fill([NUM_ALBEDO], TINY),
    )
    assert_recovers(outputs, colours)


def test_compiled_sample_normals_match_the_graph_with_gradients(geometry, scene):
    shapes, _ = scene
    rng = np.random.default_rng(22)
    vertices = f32(geometry.mean + rng.normal(0.0, 2.0, (3, *geometry.mean.shape)))
    rotation = f32(np.stack([synthetic.random_rotation(rng, 40.0) for _ in range(3)]))
    barycentrics = f32(shapes.barycentrics)
    directions = f32(rng.normal(size=(*shapes.barycentrics.shape[:2], 3)))

    def value_and_gradients(function):
        with tf.GradientTape() as tape:
            tape.watch([vertices, barycentrics, rotation])
            normals = function(vertices, tf.constant(geometry.triangles), tf.constant(shapes.vertex_ids),
                               barycentrics, rotation)
            projection = tf.reduce_sum(normals * directions)
        return [normals, *tape.gradient(projection, [vertices, barycentrics, rotation])]

    graph = value_and_gradients(tf.function(sample_normals))
    for compiled, reference in zip(value_and_gradients(sample_normals_compiled), graph):
        assert np.abs(reference.numpy()).max() > 0
        np.testing.assert_allclose(compiled.numpy(), reference.numpy(), rtol=1e-4,
                                   atol=1e-5 * np.abs(reference.numpy()).max())


def test_sample_normals_of_a_tilted_plane():
    vertices = tf.constant([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])
    triangles = tf.constant([[0, 1, 2], [1, 3, 2]])
    rotation = synthetic.random_rotation(np.random.default_rng(21), 40.0)[None]
    normals = sample_normals(
        vertices, triangles, tf.constant([[[0, 1, 2], [1, 3, 2]]]), tf.constant([[[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]]),
        tf.constant(rotation, tf.float32),
    )
    np.testing.assert_allclose(normals.numpy()[0], np.tile(rotation[0] @ [0.0, 0.0, 1.0], (2, 1)), atol=1e-6)


@pytest.mark.parametrize("prior", ["neutral", "zero"])
def test_strong_lighting_prior_pulls_to_its_target(scene, prior):
    _, colours = scene
    layer = PhotometricLeastSquares(lighting_weight=1e9, lighting_prior=prior)
    outputs = layer(*inputs(colours), coefficient_weights=tf.fill([NUM_ALBEDO], TINY))
    target = neutral_lighting().numpy() if prior == "neutral" else np.zeros((3, 9))
    np.testing.assert_allclose(outputs["lighting"].numpy(), np.broadcast_to(target, (3, 3, 9)), atol=1e-3)
    if prior == "neutral":  # unit inverse shading: albedo explains the pixel colours
        np.testing.assert_allclose(outputs["inverse_shading"].numpy(), 1.0, atol=1e-3)


def test_degenerate_inputs_give_finite_results(scene):
    _, colours = scene
    layer = PhotometricLeastSquares()
    gamma2 = tf.fill([NUM_ALBEDO], 1.0)
    black = np.zeros_like(colours.image)
    cases = {
        "zero confidence": inputs(colours, weights=np.zeros(colours.image.shape[:2])),
        "black image": inputs(colours, image=black),
        "one normal everywhere": [f32(colours.image), tf.constant([0.0, 0.0, 1.0]) * tf.ones_like(f32(colours.normals)),
                                  *inputs(colours)[2:]],
    }
    for name, arguments in cases.items():
        outputs = layer(*arguments, coefficient_weights=gamma2)
        for key, value in outputs.items():
            assert np.all(np.isfinite(value.numpy())), (name, key)
    zero = layer(*cases["zero confidence"], coefficient_weights=gamma2)
    np.testing.assert_array_equal(zero["well_posed"].numpy(), 0.0)
    np.testing.assert_allclose(zero["lighting"].numpy(), np.broadcast_to(neutral_lighting().numpy(), (3, 3, 9)), rtol=1e-5)
    # A black image carries no lighting information (the prior decides) and asks for black
    # albedo, which the albedo prior only partly grants.
    dark = layer(*cases["black image"], coefficient_weights=gamma2)
    np.testing.assert_allclose(dark["lighting"].numpy(), np.broadcast_to(neutral_lighting().numpy(), (3, 3, 9)), rtol=1e-5)
    assert dark["albedo"].numpy().mean() < colours.albedo_mean.mean()


def test_bad_inputs_raise_input_error(scene):
    _, colours = scene
    layer = PhotometricLeastSquares()
    image, normals, weights, mean, basis = inputs(colours)
    gamma2 = tf.ones([NUM_ALBEDO])
    with pytest.raises(InputError, match="image contains NaN"):
        layer(image * np.nan, normals, weights, mean, basis, gamma2)
    with pytest.raises(InputError, match="image must have shape"):
        layer(tf.concat([image, image[..., :1]], -1), normals, weights, mean, basis, gamma2)
    with pytest.raises(InputError, match="coefficient_weights"):
        layer(image, normals, weights, mean, basis, tf.ones([3]))
    with pytest.raises(InputError, match="lighting_prior"):
        PhotometricLeastSquares(lighting_prior="ambient")


def test_gradients_match_finite_differences_float64():
    rng = np.random.default_rng(22)
    batch, samples, modes = 1, 8, 2
    c = lambda a: tf.constant(a, tf.float64)  # noqa: E731
    normals = rng.normal(size=(batch, samples, 3))
    arguments = [
        c(rng.uniform(0.2, 1, (batch, samples, 3))),
        c(normals / np.linalg.norm(normals, axis=-1, keepdims=True)),
        c(rng.uniform(0.2, 1, (batch, samples))),
        c(rng.uniform(0.3, 0.7, (batch, samples, 3))),
        c(0.1 * rng.normal(size=(batch, samples, 3, modes))),
        c(rng.uniform(0.1, 1, (modes,))),
    ]
    keys = ("lighting", "coefficients", "albedo", "colour", "residual")
    shapes = ((batch, 3, 9), (batch, modes)) + ((batch, samples, 3),) * 3
    projections = [c(rng.normal(size=s)) for s in shapes]

    @tf.function
    def objective(*args):
        outputs = solve_photometry(*args, lighting_weight=0.1)
        return sum(tf.reduce_sum(outputs[k] * p) for k, p in zip(keys, projections))

    theoretical, numerical = tf.test.compute_gradient(objective, arguments, delta=1e-6)
    for analytic, finite in zip(theoretical, numerical):
        np.testing.assert_allclose(analytic, finite, rtol=1e-4, atol=1e-5 * np.abs(finite).max())


def test_gradients_are_finite_in_float32(scene):
    _, colours = scene
    tensors = inputs(colours)
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        outputs = PhotometricLeastSquares()(*tensors, coefficient_weights=tf.ones([NUM_ALBEDO]))
        loss = tf.reduce_sum(tf.square(outputs["residual"])) + tf.reduce_sum(tf.square(outputs["colour"]))
    for gradient in tape.gradient(loss, tensors):
        assert gradient is not None and np.all(np.isfinite(gradient.numpy()))


def test_layer_serialises(scene, tmp_path):
    _, colours = scene
    layer = PhotometricLeastSquares(lighting_weight=0.5, lighting_prior="zero", refinement_steps=2)
    assert PhotometricLeastSquares.from_config(layer.get_config()).get_config() == layer.get_config()
    tensors = inputs(colours)
    symbolic = [keras.Input(t.shape[1:]) for t in tensors]
    model = keras.Model(symbolic, layer(*symbolic, coefficient_weights=tf.ones([NUM_ALBEDO])))
    model.save(tmp_path / "photometric.keras")
    restored = keras.models.load_model(tmp_path / "photometric.keras")
    np.testing.assert_allclose(
        restored(tensors)["lighting"].numpy(), model(tensors)["lighting"].numpy(), rtol=1e-6
    )


def test_sh_of_unit_normals_feeds_unit_inverse_shading():
    normals = synthetic.random_rotation(np.random.default_rng(23), 180.0)
    shading = tf.linalg.matvec(neutral_lighting(tf.float64)[None], sh_basis(tf.constant(normals))[:, None])
    np.testing.assert_allclose(shading.numpy(), 1.0, rtol=1e-12)
