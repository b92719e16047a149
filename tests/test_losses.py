"""Training losses: the truncated confidence-weighted loss, E_stat, schedules, pretraining."""

import numpy as np
import tensorflow as tf

from tfface import losses


def test_truncated_loss_matches_its_formula():
    rng = np.random.default_rng(0)
    r = rng.normal(scale=3.0, size=(2, 50, 3)).astype(np.float32)
    w = rng.uniform(size=(2, 50)).astype(np.float32)
    valid = (rng.uniform(size=(2, 50)) > 0.2).astype(np.float32)
    tau = 4.0
    sq = np.minimum((r ** 2).sum(-1), tau ** 2)
    sq = valid * sq + (1 - valid) * tau ** 2
    expected = (w * sq + (1 - w) * tau ** 2).mean(-1)
    got = losses.truncated_confidence_loss(r, w, tau, valid).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_confidence_gradient_rewards_explained_pixels_only():
    r = tf.constant([[[1.0, 0, 0], [10.0, 0, 0]]])
    w = tf.Variable([[0.5, 0.5]])
    with tf.GradientTape() as tape:
        loss = losses.truncated_confidence_loss(r, w, 3.0)
    grad = tape.gradient(loss, w).numpy()[0]
    assert grad[0] < 0  # residual 1 < tau: raising confidence lowers the loss
    assert grad[1] == 0  # residual 10 > tau: confidence does not matter
    # and the residual beyond tau gets no gradient (truncation)
    r_var = tf.Variable(r)
    with tf.GradientTape() as tape:
        loss = losses.truncated_confidence_loss(r_var, w, 3.0)
    g = tape.gradient(loss, r_var).numpy()[0]
    assert g[0, 0] > 0 and g[1, 0] == 0


def test_soft_truncation_keeps_its_bound_and_a_gradient_beyond_tau():
    tau = 3.0
    r = tf.Variable([[[1.0, 0, 0], [10.0, 0, 0], [1000.0, 0, 0]]])
    w = tf.constant([[1.0, 1.0, 1.0]])
    with tf.GradientTape() as tape:
        loss = losses.truncated_confidence_loss(r, w, tau, soft=True)
    squared = np.array([1.0, 100.0, 1e6])
    np.testing.assert_allclose(loss.numpy(), [np.mean(tau ** 2 * squared / (squared + tau ** 2))], rtol=1e-5)
    assert loss.numpy()[0] < tau ** 2  # bounded by the truncated loss's cap
    gradient = tape.gradient(loss, r).numpy()[0, :, 0]
    assert (gradient > 0).all()  # every residual, 10 > tau included, is pulled back towards 0
    with tf.GradientTape() as tape:
        hard = losses.truncated_confidence_loss(r, w, tau)
    assert tape.gradient(hard, r).numpy()[0, 1, 0] == 0


def test_statistical_loss_and_translation_schedule():
    c = np.array([[1.0, -2.0, 0.5]], np.float32)
    w = np.array([1.0, 0.5, 4.0], np.float32)
    np.testing.assert_allclose(losses.statistical_loss(c, w).numpy(), [1 + 2 + 1])
    np.testing.assert_allclose(losses.translation_weight(0, 2.0, 100.0).numpy(), 2.0)
    np.testing.assert_allclose(losses.translation_weight(100, 2.0, 100.0).numpy(), 2.0 / np.e, rtol=1e-6)
    assert losses.translation_weight(5, 2.0, 0).numpy() == 0.0


def test_pretraining_loss_is_zero_only_at_target_and_finite_at_saturation():
    h, w = 4, 4
    target = np.zeros((1, h, w, 4), np.float32)
    target[..., 0] = 0.3
    target[..., 1] = 0.6
    target[..., 2] = 1.0
    target[0, 1:3, 1:3, 3] = 1.0
    pred = np.concatenate([target[..., :3], target[..., 3:4], target[..., 3:4]], -1)
    zero = losses.pretraining_loss(pred, target).numpy()
    assert np.all(np.isfinite(zero)) and zero[0] < 1e-4
    worse = pred.copy()
    worse[0, 1, 1, 0] += 0.2
    assert losses.pretraining_loss(worse, target).numpy()[0] > zero[0] + 0.2 ** 2 / 4 - 1e-6
    # outside the face region the correspondence is not supervised
    outside = pred.copy()
    outside[0, 0, 0, 0:3] = 0.9
    np.testing.assert_allclose(losses.pretraining_loss(outside, target).numpy(), zero, atol=1e-6)


def test_pretraining_loss_weighs_the_depth_error_by_depth_weight():
    """Inside the face region the loss is the mean of |uv error|^2 + depth_weight x depth error^2."""
    target = np.zeros((1, 2, 2, 4), np.float32)
    target[..., 3] = [[1.0, 1.0], [0.0, 0.0]]
    pred = np.concatenate([target[..., :3], target[..., 3:4], target[..., 3:4]], -1)
    pred[0, 0, 0, 0] += 0.3  # uv error 0.09 at a face pixel
    pred[0, 0, 1, 2] += 0.1  # depth error 0.01 at the other
    pred[0, 1, 0, 2] += 0.5  # outside the face: not supervised
    confidence_term = losses.pretraining_loss(target[..., [0, 1, 2, 3, 3]], target).numpy()
    for depth_weight in (1.0, 25.0):
        got = losses.pretraining_loss(pred, target, depth_weight=depth_weight).numpy() - confidence_term
        np.testing.assert_allclose(got, [(0.09 + depth_weight * 0.01) / 2], rtol=1e-5)


def _affine_uv_maps(matrix, offset, size=24, confidence=0.8):
    """``(1, size, size, 5)`` maps whose UV is ``matrix p + offset`` at pixel centre ``p``."""
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)
    uv = centres @ np.asarray(matrix).T + offset
    rest = np.broadcast_to([0.0, confidence, confidence], (size, size, 3))
    return np.concatenate([uv, rest], -1)[None].astype(np.float32)


def test_equivariance_loss_is_zero_for_maps_that_follow_the_warp_and_exact_for_ones_that_stay():
    """UV affine in the pixel: the maps of the warped image that follow the similarity ``A``
    (``uv'(p) = uv(A^-1 p)``, built in closed form) cost 0; maps that ignore a shift ``d``
    cost exactly ``|M d|^2`` on every covered pixel."""
    from tfface.data.augment import similarity_matrices

    matrix, offset, size = np.array([[0.02, 0.005], [-0.004, 0.03]]), np.array([0.1, 0.2]), 24
    maps = _affine_uv_maps(matrix, offset, size)
    turn = similarity_matrices([0.4], [1.1], [[2.0, -1.5]], size, size)
    inverse = np.linalg.inv(turn.numpy()[0])
    followed = _affine_uv_maps(matrix @ inverse[:2, :2], matrix @ inverse[:2, 2] + offset, size)
    np.testing.assert_allclose(losses.equivariance_loss(followed, maps, turn).numpy(), [0.0], atol=1e-9)
    shift = np.array([3.0, -2.0])
    moved = similarity_matrices([0.0], [1.0], [shift], size, size)
    expected = np.sum((matrix @ shift) ** 2)
    np.testing.assert_allclose(losses.equivariance_loss(maps, maps, moved).numpy(), [expected], rtol=1e-4)
    np.testing.assert_allclose(losses.equivariance_loss(maps, maps, turn).numpy() > 1e-4, [True])


def test_equivariance_loss_trains_the_correspondence_not_the_confidence():
    """The confidences only weigh the error (held fixed); the UV of both maps get a gradient."""
    from tfface.data.augment import similarity_matrices

    maps = tf.Variable(_affine_uv_maps(np.eye(2) * 0.02, np.zeros(2)))
    moved = similarity_matrices([0.0], [1.0], [[2.0, 1.0]], 24, 24)
    with tf.GradientTape() as tape:
        loss = losses.equivariance_loss(maps * 1.0, maps, moved)
    gradient = tape.gradient(loss, maps).numpy()
    assert np.abs(gradient[..., 0:2]).max() > 1e-6
    np.testing.assert_array_equal(gradient[..., 2:], 0.0)
