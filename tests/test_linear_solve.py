"""SPD solvers (Cholesky and the TFLite-builtin Gauss-Jordan), Jacobi-scaled normal equations and
iterative refinement."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tfface.errors import InputError
from tfface.layers.linear_solve import SOLVERS, solve_normal_equations, solve_spd
from tfface.layers.normal_equations import solve_refined


def random_spd(rng: np.random.Generator, batch: int, n: int, condition: float = 10.0) -> np.ndarray:
    """SPD matrices with eigenvalues log-spaced in [1, condition] and random eigenvectors."""
    q, _ = np.linalg.qr(rng.normal(size=(batch, n, n)))
    eigenvalues = np.logspace(0, np.log10(condition), n)
    return np.einsum("bij,j,bkj->bik", q, eigenvalues, q)


@pytest.mark.parametrize("method", SOLVERS)
def test_solvers_match_float64_reference_at_size_170(method):
    rng = np.random.default_rng(0)
    matrix = random_spd(rng, 4, 170)
    rhs = rng.normal(size=(4, 170))
    reference = np.linalg.solve(matrix, rhs[..., None])[..., 0]
    solution = solve_spd(tf.constant(matrix, tf.float32), tf.constant(rhs, tf.float32), method).numpy()
    error = np.linalg.norm(solution - reference, axis=-1) / np.linalg.norm(reference, axis=-1)
    assert error.max() < 1e-5


def test_solvers_agree_with_each_other():
    rng = np.random.default_rng(1)
    matrix = tf.constant(random_spd(rng, 3, 170), tf.float32)
    rhs = tf.constant(rng.normal(size=(3, 170, 2)), tf.float32)
    cholesky = solve_spd(matrix, rhs, "cholesky").numpy()
    gauss_jordan = solve_spd(matrix, rhs, "gauss_jordan").numpy()
    assert gauss_jordan.shape == (3, 170, 2)
    assert np.linalg.norm(cholesky - gauss_jordan) / np.linalg.norm(cholesky) < 1e-5


@pytest.mark.parametrize("method", SOLVERS)
def test_gradient_matches_finite_differences_float64(method):
    rng = np.random.default_rng(2)
    matrix = tf.constant(random_spd(rng, 2, 6), tf.float64)
    rhs = tf.constant(rng.normal(size=(2, 6)), tf.float64)
    weights = tf.constant(rng.normal(size=(2, 6)), tf.float64)

    def objective(a, b):
        # Symmetrise so that the finite differences stay in the SPD set.
        return tf.reduce_sum(weights * solve_spd(0.5 * (a + tf.linalg.matrix_transpose(a)), b, method))

    theoretical, numerical = tf.test.compute_gradient(objective, [matrix, rhs], delta=1e-6)
    for analytic, finite in zip(theoretical, numerical):
        np.testing.assert_allclose(analytic, finite, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", SOLVERS)
def test_gradient_is_finite_in_float32(method):
    rng = np.random.default_rng(3)
    matrix = tf.constant(random_spd(rng, 2, 40, condition=1e3), tf.float32)
    rhs = tf.constant(rng.normal(size=(2, 40)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([matrix, rhs])
        loss = tf.reduce_sum(tf.square(solve_spd(matrix, rhs, method)))
    for gradient in tape.gradient(loss, [matrix, rhs]):
        assert np.all(np.isfinite(gradient.numpy()))


def test_jacobi_scaling_handles_wildly_different_column_scales():
    rng = np.random.default_rng(4)
    scales = np.logspace(-4, 5, 30)
    design = rng.normal(size=(200, 30)) * scales
    matrix = design.T @ design
    truth = rng.normal(size=30) / scales
    rhs = design.T @ (design @ truth)
    solution = solve_normal_equations(
        tf.constant(matrix[None], tf.float32), tf.constant(rhs[None], tf.float32), ridge=1e-7
    ).numpy()[0]
    np.testing.assert_allclose(solution * scales, truth * scales, rtol=0, atol=1e-3)


@pytest.mark.parametrize("method", SOLVERS)
def test_rank_deficient_and_zero_systems_give_finite_zero_unknowns(method):
    matrix = np.diag([4.0, 0.0, 9.0])[None]
    rhs = np.array([[8.0, 0.0, 9.0]])
    solution = solve_normal_equations(tf.constant(matrix, tf.float32), tf.constant(rhs, tf.float32), method=method)
    np.testing.assert_allclose(solution.numpy(), [[2.0, 0.0, 1.0]], rtol=1e-5)
    zero = solve_normal_equations(tf.zeros([2, 5, 5]), tf.zeros([2, 5]), method=method).numpy()
    assert np.all(zero == 0.0)


def test_refinement_removes_ridge_bias_but_not_null_directions():
    rng = np.random.default_rng(5)
    design = rng.normal(size=(1, 60, 8))
    design[..., 7] = 0.0  # an unknown the data never see: must stay 0
    truth = rng.normal(size=(1, 8))
    truth[..., 7] = 0.0
    targets = np.einsum("bij,bj->bi", design, truth)
    a, b = tf.constant(design), tf.constant(targets)
    matrix = tf.matmul(a, a, transpose_a=True)
    rhs = tf.linalg.matvec(a, b, transpose_a=True)

    def gradient(x):
        return tf.linalg.matvec(a, b - tf.linalg.matvec(a, x), transpose_a=True)

    errors = [
        np.abs(solve_refined(matrix, rhs, gradient, steps, ridge=1e-2).numpy() - truth).max()
        for steps in (0, 1, 6)
    ]
    assert errors[0] > 1e-4
    assert errors[1] < errors[0] / 10
    assert errors[2] < 1e-9


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="unknown solver"):
        solve_spd(tf.eye(3), tf.ones([3]), "qr")
    with pytest.raises(InputError, match="matrix must be"):
        solve_spd(tf.ones([3, 4]), tf.ones([3]))
    with pytest.raises(InputError, match="does not match"):
        solve_spd(tf.eye(3), tf.ones([4]))


def test_gauss_jordan_converts_to_tflite_builtins_and_matches():
    rng = np.random.default_rng(6)
    matrix = random_spd(rng, 1, 12).astype(np.float32)
    rhs = rng.normal(size=(1, 12)).astype(np.float32)

    class Solve(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 12, 12]), tf.TensorSpec([1, 12])])
        def __call__(self, a, b):
            return {"x": solve_spd(a, b, "gauss_jordan")}

    module = Solve()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.__call__.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner()
    result = runner(a=matrix, b=rhs)["x"]
    np.testing.assert_allclose(result, np.linalg.solve(matrix[0], rhs[0])[None], rtol=1e-4, atol=1e-5)


def _geometric_case(rng, samples, modes):
    from tfface.layers.geometric import GeometricLeastSquares

    arrays = [rng.uniform(0, 224, (1, samples, 2)), rng.uniform(5, 6, (1, samples)), rng.uniform(0.5, 1, (1, samples)),
              30 * rng.normal(size=(1, samples, 3)), rng.normal(size=(1, samples, 3, modes))]
    return GeometricLeastSquares(solver="gauss_jordan", translation_weight=1.0), arrays, ["p_hat", "q_hat", "coefficients"]


def _photometric_case(rng, samples, modes):
    from tfface.layers.photometric import PhotometricLeastSquares

    normals = rng.normal(size=(1, samples, 3))
    arrays = [rng.uniform(0.2, 1, (1, samples, 3)), normals / np.linalg.norm(normals, axis=-1, keepdims=True),
              rng.uniform(0.5, 1, (1, samples)), rng.uniform(0.3, 0.7, (1, samples, 3)),
              0.1 * rng.normal(size=(1, samples, 3, modes))]
    return PhotometricLeastSquares(solver="gauss_jordan", lighting_weight=0.1), arrays, ["lighting", "coefficients"]


@pytest.mark.parametrize("case", [_geometric_case, _photometric_case])
def test_least_squares_layers_convert_to_tflite_builtins_and_match(case):
    rng = np.random.default_rng(7)
    layer, arrays, keys = case(rng, 40, 4)
    arrays = [a.astype(np.float32) for a in arrays]
    names = [f"x{i}" for i in range(len(arrays))]

    class Solve(tf.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        @tf.function(input_signature=[tf.TensorSpec(a.shape, name=n) for a, n in zip(arrays, names)])
        def __call__(self, *tensors):
            outputs = self.layer(*tensors, coefficient_weights=tf.ones([4]))
            return tuple(outputs[k] for k in keys)

    module = Solve()
    # Variables (the translation weight) become constants, as an exporter does.
    frozen = convert_variables_to_constants_v2(module.__call__.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], arrays[names.index(detail["name"])])
    interpreter.invoke()
    keras_outputs = module(*[tf.constant(a) for a in arrays])
    for detail, expected in zip(interpreter.get_output_details(), keras_outputs):
        lite = interpreter.get_tensor(detail["index"])
        np.testing.assert_allclose(lite, expected.numpy(), rtol=1e-4, atol=1e-5 * np.abs(lite).max())
