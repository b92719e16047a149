"""GeometricLeastSquares (eqs. 33-37), camera decomposition and the inference variants, on
synthetic samples of the default ICT geometry with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfface.errors import InputError, SolveError
from tfface.layers import least_squares_synthetic as synthetic
from tfface.layers.geometric import (GeometricLeastSquares, InverseCameraDecomposition, camera_features,
                                    camera_features_inverse, solve_geometry)
from tfface.layers.geometric_variants import (
    polar_rotation,
    solve_geometry_known_intrinsics,
    solve_geometry_shared_identity,
)
from tfface.layers.graph_loops import iterate

NUM_IDENTITY, NUM_EXPRESSION = 20, 10
TINY = 1e-6  # near-zero regularisation of the coefficients


def f32(array) -> tf.Tensor:
    return tf.constant(array, tf.float32)


def inputs(problem: synthetic.GeometricProblem, weights=None) -> list[tf.Tensor]:
    weights = np.ones(problem.depth.shape) if weights is None else weights
    return [f32(problem.pixels), f32(problem.depth), f32(weights), f32(problem.mean), f32(problem.basis)]


@pytest.fixture(scope="module")
def geometry(default_model_path) -> synthetic.Geometry:
    return synthetic.load_ict_geometry(NUM_IDENTITY, NUM_EXPRESSION, default_model_path)


@pytest.fixture(scope="module")
def problem(geometry) -> synthetic.GeometricProblem:
    return synthetic.geometric_problem(geometry, np.random.default_rng(10), batch=3, num_samples=1500)


def assert_recovers(outputs, problem, tolerance=1e-3):
    camera = InverseCameraDecomposition()(outputs["p_hat"], outputs["q_hat"])
    rel = synthetic.relative_error
    assert rel(outputs["coefficients"].numpy(), problem.coefficients).max() < tolerance
    assert rel(camera["K"].numpy(), problem.K).max() < tolerance
    assert rel(camera["R"].numpy(), problem.R).max() < tolerance
    assert rel(camera["t"].numpy(), problem.t).max() < tolerance
    assert rel(camera["psi"].numpy()[:, None], problem.psi[:, None]).max() < tolerance
    np.testing.assert_array_equal(camera["valid"].numpy(), 1.0)


@pytest.mark.parametrize("solver", ["cholesky", "gauss_jordan"])
def test_noiseless_samples_recover_coefficients_and_camera(problem, solver):
    layer = GeometricLeastSquares(solver=solver)
    outputs = layer(*inputs(problem), coefficient_weights=tf.fill([NUM_IDENTITY + NUM_EXPRESSION], TINY))
    assert_recovers(outputs, problem)
    assert np.abs(outputs["residual"].numpy()).max() < 1e-2  # mm
    np.testing.assert_array_equal(outputs["well_posed"].numpy(), 1.0)


def test_noiseless_samples_with_the_full_default_basis(default_model_path):
    geometry = synthetic.load_ict_geometry(100, 53, default_model_path)
    problem = synthetic.geometric_problem(geometry, np.random.default_rng(11), batch=2, num_samples=2500)
    outputs = GeometricLeastSquares()(*inputs(problem), coefficient_weights=tf.fill([153], TINY))
    assert_recovers(outputs, problem)


def test_samples_at_vertices_and_large_depth_scale(geometry):
    rng = np.random.default_rng(12)
    problem = synthetic.geometric_problem(geometry, rng, batch=2, num_samples=1200)
    at_vertices = np.eye(3)[rng.integers(0, 3, problem.barycentrics.shape[:2])]
    mean = np.einsum("bpi,bpic->bpc", at_vertices, geometry.mean[problem.vertex_ids])
    basis = np.einsum("bpi,kbpic->bpck", at_vertices, geometry.basis[:, problem.vertex_ids])
    points = mean + np.einsum("bpck,bk->bpc", basis, problem.coefficients)
    camera = np.einsum("bij,bpj->bpi", problem.R, points) + problem.t[:, None]
    pixels = np.einsum("bij,bpj->bpi", problem.K, camera)
    huge = 1e4  # depth in other units (e.g. micrometres at 1e3): psi absorbs the scale
    vertex_problem = synthetic.GeometricProblem(
        pixels[..., :2] / pixels[..., 2:], huge * problem.psi[:, None] * camera[..., 2], mean, basis,
        problem.coefficients, problem.K, problem.R, problem.t, huge * problem.psi,
        problem.vertex_ids, at_vertices, problem.vertices,
    )
    outputs = GeometricLeastSquares()(*inputs(vertex_problem), coefficient_weights=tf.fill([30], TINY))
    assert_recovers(outputs, vertex_problem)


def test_sample_weights_ignore_outliers(problem):
    corrupted = problem.depth.copy()
    corrupted[:, :300] *= 3.0
    weights = np.ones(problem.depth.shape)
    weights[:, :300] = 0.0
    broken = synthetic.GeometricProblem(**{**problem.__dict__, "depth": corrupted})
    outputs = solve_geometry(*inputs(broken, weights), tf.fill([30], TINY))
    assert_recovers(outputs, problem)
    assert np.abs(outputs["residual"].numpy()[:, :300]).max() > 10.0  # outliers keep their error


def test_priors_pull_to_their_targets(problem):
    strong = GeometricLeastSquares(z0=700.0, translation_weight=1e9)
    outputs = strong(*inputs(problem), coefficient_weights=tf.fill([3, 30], 1e9))
    np.testing.assert_allclose(outputs["q_hat"].numpy(), np.tile([0.0, 0.0, 700.0], (3, 1)), atol=1e-2)
    assert np.abs(outputs["coefficients"].numpy()).max() < 1e-3
    # Solving without the prior (inference) ignores its weight: the exact fit.
    outputs = strong(*inputs(problem), coefficient_weights=tf.fill([30], TINY), translation_prior=False)
    assert_recovers(outputs, problem)
    # The schedule sets the translation weight from outside: 0 restores the exact fit.
    strong.translation_weight.assign(0.0)
    outputs = strong(*inputs(problem), coefficient_weights=tf.fill([30], TINY))
    assert_recovers(outputs, problem)


def test_errors_grow_gracefully_with_noise(geometry):
    albedo = synthetic.random_albedo_model(np.random.default_rng(13), len(geometry.mean), 8)
    levels = [0.0, 0.005, 0.01, 0.02, 0.05]
    curve = [synthetic.noisy_fit_errors(geometry, albedo, level, 3, 1500, 1.0, seed=14) for level in levels]
    for name in ("shape (mm)", "K", "R (deg)", "t", "lighting", "albedo"):
        values = [row[name] for row in curve]
        assert all(b > 0.8 * a for a, b in zip(values[1:], values[2:])), (name, values)
        assert values[-1] > values[1], (name, values)
    noisiest = curve[-1]
    assert noisiest["shape (mm)"] < 20.0 and noisiest["R (deg)"] < 2.0 and noisiest["K"] < 0.1
    assert noisiest["lighting"] < 0.05 and noisiest["albedo"] < 0.01
    assert curve[0]["shape (mm)"] < 0.1 and curve[0]["lighting"] < 1e-3


def test_degenerate_inputs_give_finite_results(problem):
    layer = GeometricLeastSquares(translation_weight=1.0)
    alpha2 = tf.fill([30], 1.0)
    pixels, depth, weights, mean, basis = inputs(problem)
    cases = {
        "zero confidence": (pixels, depth, tf.zeros_like(weights)),
        "all pixels on one point": (tf.ones_like(pixels) * 100.5, depth, weights),
        "constant depth": (pixels, tf.ones_like(depth) * 3.0, weights),
        "huge depths": (pixels, depth * 1e30, weights),
        "zero depths": (pixels, tf.zeros_like(depth), weights),
    }
    for name, (x, d, w) in cases.items():
        outputs = layer(x, d, w, mean, basis, alpha2)
        for key, value in outputs.items():
            assert np.all(np.isfinite(value.numpy())), (name, key)
    zero = layer(pixels, depth, tf.zeros_like(weights), mean, basis, alpha2)
    np.testing.assert_array_equal(zero["well_posed"].numpy(), 0.0)
    point = layer(*cases["all pixels on one point"], mean, basis, alpha2)
    np.testing.assert_array_equal(point["well_posed"].numpy(), 0.0)  # singular P_hat
    np.testing.assert_array_equal(layer(pixels, depth, weights, mean, basis, alpha2)["well_posed"].numpy(), 1.0)
    np.testing.assert_allclose(zero["q_hat"].numpy(), np.tile([0.0, 0.0, 500.0], (3, 1)), atol=1e-3)
    # The decomposition of such a solve is a clear error eagerly and finite inside tf.function.
    with pytest.raises(SolveError, match="cannot be decomposed"):
        InverseCameraDecomposition()(zero["p_hat"], zero["q_hat"])
    graph = tf.function(lambda p, q: InverseCameraDecomposition()(p, q))(zero["p_hat"], zero["q_hat"])
    assert all(np.all(np.isfinite(v.numpy())) for v in graph.values())
    np.testing.assert_array_equal(graph["valid"].numpy(), 0.0)


def test_graph_mode_never_returns_nan(problem):
    layer = GeometricLeastSquares()
    pixels, depth, weights, mean, basis = inputs(problem)
    run = tf.function(lambda *args: layer(*args))
    outputs = run(pixels, depth, tf.zeros_like(weights), mean, basis, tf.zeros([30]))
    assert all(np.all(np.isfinite(v.numpy())) for v in outputs.values())


def test_bad_inputs_raise_input_error(problem):
    layer = GeometricLeastSquares()
    pixels, depth, weights, mean, basis = inputs(problem)
    alpha2 = tf.ones([30])
    with pytest.raises(InputError, match="depth contains NaN"):
        layer(pixels, depth * np.nan, weights, mean, basis, alpha2)
    with pytest.raises(InputError, match="non-negative"):
        layer(pixels, depth, -weights, mean, basis, alpha2)
    with pytest.raises(InputError, match="pixels must have shape"):
        layer(pixels[..., :1], depth, weights, mean, basis, alpha2)
    with pytest.raises(InputError, match="disagree"):
        layer(pixels[:, :10], depth, weights, mean, basis, alpha2)
    with pytest.raises(InputError, match="coefficient_weights"):
        layer(pixels, depth, weights, mean, basis, tf.ones([29]))
    with pytest.raises(InputError, match="unknown solver"):
        GeometricLeastSquares(solver="svd")


def small_float64_problem(seed: int):
    rng = np.random.default_rng(seed)
    batch, samples, modes = 2, 8, 2
    c = lambda a: tf.constant(a, tf.float64)  # noqa: E731
    return [
        c(rng.uniform(0, 100, (batch, samples, 2))),
        c(rng.uniform(5, 6, (batch, samples))),
        c(rng.uniform(0.2, 1, (batch, samples))),
        c(30 * rng.normal(size=(batch, samples, 3))),
        c(rng.normal(size=(batch, samples, 3, modes))),
        c(rng.uniform(0.1, 1, (modes,))),
    ], [c(rng.normal(size=s)) for s in [(batch, 3, 3), (batch, 3), (batch, modes), (batch, samples, 3)]]


def test_gradients_match_finite_differences_float64():
    arguments, projections = small_float64_problem(15)

    @tf.function
    def objective(*args):
        outputs = solve_geometry(*args, translation_weight=0.3, z0=50.0)
        keys = ("p_hat", "q_hat", "coefficients", "residual")
        return sum(tf.reduce_sum(outputs[k] * p) for k, p in zip(keys, projections))

    theoretical, numerical = tf.test.compute_gradient(objective, arguments, delta=1e-6)
    for analytic, finite in zip(theoretical, numerical):
        # The ridge (1e-6, relative) biases the solution and gradient by O(1e-6).
        np.testing.assert_allclose(analytic, finite, rtol=1e-4, atol=1e-5 * np.abs(finite).max())


def test_gradients_are_finite_in_float32(problem):
    layer = GeometricLeastSquares(translation_weight=1.0)
    tensors = inputs(problem)
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        outputs = layer(*tensors, coefficient_weights=tf.fill([30], 1.0))
        loss = tf.reduce_sum(tf.square(outputs["residual"])) + tf.reduce_sum(tf.square(outputs["coefficients"]))
    for gradient in tape.gradient(loss, tensors):
        assert gradient is not None and np.all(np.isfinite(gradient.numpy()))


def test_layer_serialises_with_its_translation_weight(problem, tmp_path):
    layer = GeometricLeastSquares(z0=600.0, translation_weight=2.0, ridge=1e-7, solver="gauss_jordan")
    clone = GeometricLeastSquares.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    pixels, depth, weights, mean, basis = inputs(problem)
    symbolic = [keras.Input(t.shape[1:]) for t in (pixels, depth, weights, mean, basis)]
    model = keras.Model(symbolic, layer(*symbolic, coefficient_weights=tf.ones([30])))
    layer.translation_weight.assign(5.0)  # the schedule's current value must survive saving
    model.save(tmp_path / "geometric.keras")
    restored = keras.models.load_model(tmp_path / "geometric.keras")
    assert float(restored.layers[-1].translation_weight.numpy()) == 5.0
    expected = model([pixels, depth, weights, mean, basis])["q_hat"].numpy()
    np.testing.assert_allclose(restored([pixels, depth, weights, mean, basis])["q_hat"].numpy(), expected, rtol=1e-5)


def test_camera_features_inverse_inverts_the_feature_transform():
    rng = np.random.default_rng(5)
    pixels = rng.uniform(0, 128, (3, 50, 2))
    depth = rng.uniform(0.5, 3.0, (3, 50))
    weights = rng.uniform(0, 1, (3, 50)) * (rng.uniform(size=(3, 50)) > 0.3)
    _, transform = camera_features(tf.constant(pixels), tf.constant(depth), tf.constant(weights))
    inverse = camera_features_inverse(transform).numpy()
    np.testing.assert_allclose(inverse, np.linalg.inv(transform.numpy()), rtol=1e-10, atol=1e-10)


def test_iterate_applies_a_step_a_fixed_number_of_times_in_one_graph_loop():
    step = lambda state: {"count": state["count"] + 1.0, "double": 2.0 * state["double"]}  # noqa: E731
    initial = {"count": tf.constant(0.0), "double": tf.constant([1.0, 3.0])}
    for run in (lambda f: f, tf.function):
        out = run(lambda x: iterate(step, x, 3))(initial)
        assert out["count"].numpy() == 3.0
        np.testing.assert_array_equal(out["double"].numpy(), [8.0, 24.0])
    graph = tf.function(lambda x: iterate(step, x, 5)).get_concrete_function(initial).graph
    assert [op.type for op in graph.get_operations()].count("StatelessWhile") == 1
    assert iterate(None, initial, 0) is initial  # no step traced or run


def test_polar_rotation_recovers_rotation_of_scaled_matrices():
    rng = np.random.default_rng(16)
    rotations = np.stack([synthetic.random_rotation(rng, 90.0) for _ in range(5)])
    rotations *= np.sign(np.linalg.det(rotations))[:, None, None]
    stretched = rotations @ np.diag([1.3, 0.9, 1.1]) * 0.01  # R S: polar factor R
    np.testing.assert_allclose(polar_rotation(tf.constant(stretched)).numpy(), rotations, atol=1e-10)
    # Rank 2 (one direction undetermined, as the inverse camera of a flat depth map): still R, in
    # float32 and compiled too (the start is completed, not the singular matrix itself).
    for column in range(3):
        flattened = stretched.copy()
        flattened[..., column] = 0.0
        np.testing.assert_allclose(polar_rotation(tf.constant(flattened)).numpy(), rotations, atol=1e-10)
        compiled = tf.function(polar_rotation)(tf.constant(flattened, tf.float32)).numpy()
        np.testing.assert_allclose(compiled, rotations, atol=1e-5)
    # Rank 1, zero and non-finite matrices give the identity, with finite gradients.
    degenerate = tf.constant(np.stack([np.outer([1.0, 2.0, 3.0], [0.0, 1.0, 1.0]), np.zeros((3, 3)),
                                       np.full((3, 3), np.nan)]))
    with tf.GradientTape() as tape:
        tape.watch(degenerate)
        rotation = polar_rotation(degenerate)
    np.testing.assert_array_equal(rotation.numpy(), np.broadcast_to(np.eye(3), (3, 3, 3)))
    gradient = tape.gradient(rotation, degenerate).numpy()
    assert np.all(np.isfinite(gradient[:2]))


def test_known_intrinsics_recover_pose_and_shape(problem):
    outputs = solve_geometry_known_intrinsics(*inputs(problem), tf.fill([30], TINY), f32(problem.K))
    rel = synthetic.relative_error
    assert rel(outputs["coefficients"].numpy(), problem.coefficients).max() < 1e-3
    assert rel(outputs["R"].numpy(), problem.R).max() < 1e-3
    assert rel(outputs["t"].numpy(), problem.t).max() < 1e-3
    assert rel(outputs["psi"].numpy()[:, None], problem.psi[:, None]).max() < 1e-3
    np.testing.assert_allclose(np.linalg.det(outputs["R"].numpy()), 1.0, atol=1e-5)


def test_known_intrinsics_minimise_the_constrained_objective_under_noise(problem):
    noisy = synthetic.add_geometric_noise(problem, np.random.default_rng(17), 0.02)
    samples, alpha2 = inputs(noisy), tf.fill([30], 1.0)

    def objective(outputs):
        data = tf.reduce_sum(tf.square(outputs["residual"]), axis=[1, 2])
        return (data + tf.reduce_sum(alpha2 * tf.square(outputs["coefficients"]), axis=-1)).numpy()

    projected = solve_geometry_known_intrinsics(*samples, alpha2, f32(problem.K), rotation_steps=0)
    optimised = solve_geometry_known_intrinsics(*samples, alpha2, f32(problem.K))
    unconstrained = solve_geometry(*samples, alpha2)
    # Gauss-Newton on the rotation lowers the cost of the polar projection; the constrained
    # optimum cannot beat the unconstrained one.
    assert np.all(objective(optimised) < objective(projected))
    assert np.all(objective(optimised) >= objective(unconstrained) * (1 - 1e-5))
    np.testing.assert_allclose(optimised["K"].numpy(), problem.K, rtol=1e-6)
    rotations = optimised["R"].numpy()
    np.testing.assert_allclose(np.einsum("bji,bjk->bik", rotations, rotations), np.tile(np.eye(3), (3, 1, 1)), atol=1e-5)


def test_shared_identity_across_views(geometry):
    rng = np.random.default_rng(18)
    views = 3
    coefficients = rng.normal(size=(views, NUM_IDENTITY + NUM_EXPRESSION))
    coefficients[:, :NUM_IDENTITY] = coefficients[0, :NUM_IDENTITY]
    problem = synthetic.geometric_problem(geometry, rng, views, 1200, coefficients=coefficients)
    batched = [t[None] for t in inputs(problem)]
    outputs = solve_geometry_shared_identity(*batched, tf.fill([30], TINY), NUM_IDENTITY)
    rel = synthetic.relative_error
    assert outputs["p_hat"].shape == (1, views, 3, 3)
    assert rel(outputs["identity"].numpy(), coefficients[:1, :NUM_IDENTITY]).max() < 1e-3
    assert rel(outputs["expression"].numpy()[0], coefficients[:, NUM_IDENTITY:]).max() < 1e-3
    camera = InverseCameraDecomposition()(outputs["p_hat"][0], outputs["q_hat"][0])
    assert rel(camera["R"].numpy(), problem.R).max() < 1e-3
    assert rel(camera["t"].numpy(), problem.t).max() < 1e-3

    # Under noise, pooling the views estimates the identity better than any single view.
    noisy = synthetic.add_geometric_noise(problem, np.random.default_rng(19), 0.01)
    pooled = solve_geometry_shared_identity(*[t[None] for t in inputs(noisy)], tf.fill([30], 1.0), NUM_IDENTITY)
    single = solve_geometry(*inputs(noisy), tf.fill([30], 1.0))
    pooled_error = rel(pooled["identity"].numpy(), coefficients[:1, :NUM_IDENTITY])[0]
    single_error = rel(single["coefficients"].numpy()[:, :NUM_IDENTITY], coefficients[:, :NUM_IDENTITY])
    assert pooled_error < single_error.mean()
