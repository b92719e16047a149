"""The structured least-squares products against the dense design matrix they stand for."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfface.layers import structured_least_squares as structured

#: More than two chunks, the last one short.
SAMPLES = 2 * structured.CHUNK_SAMPLES + 37


def random_problem(shared: bool, seed: int = 0, batch: int = 2, q: int = 4, modes: int = 7):
    """A float64 LinearProblem and its dense design ``A`` (B, 3P, n), targets and weights."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, SAMPLES, q) if shared else (batch, SAMPLES, 3, q))
    weights = rng.uniform(0, 1, (batch, SAMPLES))
    basis = rng.normal(size=(batch, SAMPLES, 3, modes))
    target = rng.normal(size=(batch, SAMPLES, 3))
    n = 3 * q + modes
    prior = rng.normal(size=(batch, n, n))
    prior_matrix = prior @ prior.transpose(0, 2, 1) / n
    prior_rhs = rng.normal(size=(batch, n))
    per_channel = np.broadcast_to(features[:, :, None], (batch, SAMPLES, 3, q)) if shared else features
    dense = np.zeros((batch, SAMPLES, 3, n))
    for c in range(3):
        dense[:, :, c, c * q:(c + 1) * q] = per_channel[:, :, c]
    dense[..., 3 * q:] = -basis
    problem = structured.LinearProblem(*(tf.constant(a) for a in (features, weights, basis, target, prior_matrix,
                                                                   prior_rhs)))
    return problem, dense.reshape(batch, 3 * SAMPLES, n), target.reshape(batch, -1), np.repeat(weights, 3, axis=1)


@pytest.mark.parametrize("shared", [True, False])
def test_normal_equations_match_the_dense_design(shared):
    problem, A, b, w = random_problem(shared)
    matrix, rhs = structured.normal_equations(problem)
    want_matrix = np.einsum("bri,br,brj->bij", A, w, A) + problem.prior_matrix.numpy()
    want_rhs = np.einsum("bri,br,br->bi", A, w, b) + problem.prior_rhs.numpy()
    np.testing.assert_allclose(matrix.numpy(), want_matrix, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(rhs.numpy(), want_rhs, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("shared", [True, False])
def test_refinement_gradient_matches_the_dense_design(shared):
    problem, A, b, w = random_problem(shared, seed=1)
    x = np.random.default_rng(2).normal(size=(2, A.shape[-1]))
    got = structured.gradient(problem, tf.constant(x)).numpy()
    error = np.einsum("bri,bi->br", A, x) - b
    want = (-np.einsum("bri,br->bi", A, w * error) + problem.prior_rhs.numpy()
            - np.einsum("bij,bj->bi", problem.prior_matrix.numpy(), x))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(structured.residual(problem, tf.constant(x)).numpy().reshape(2, -1), error,
                               rtol=1e-10, atol=1e-10)
