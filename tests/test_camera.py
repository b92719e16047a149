"""Inverse camera: compose / decompose round trip, projection identities, degenerate input, the
plausibility rule of real cameras."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError, SolveError
from tfface.paths import REPO_ROOT
from tfface.geometry import camera
from tfface.geometry.camera import (
    adjugate,
    camera_is_plausible,
    compose_inverse_camera,
    decompose_inverse_camera,
    inverse_camera_is_valid,
    project,
    random_cameras,
    unproject,
)


def test_random_cameras_are_proper():
    K, R, t, psi = random_cameras(50, seed=0)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1, atol=1e-12)
    assert np.all(np.diagonal(K, axis1=1, axis2=2) > 0) and np.all(psi > 0)
    np.testing.assert_array_equal(np.tril(K, -1), 0)


@pytest.mark.parametrize("dtype, tol", [(tf.float64, 1e-9), (tf.float32, 1e-5)])
def test_round_trip_1000_random_cameras(dtype, tol):
    K, R, t, psi = random_cameras(1000, seed=1)
    p_hat, q_hat = compose_inverse_camera(*(tf.constant(a, dtype) for a in (K, R, t, psi)))
    K2, R2, t2, psi2 = (a.numpy().astype(np.float64) for a in decompose_inverse_camera(p_hat, q_hat))
    # Relative errors per camera: K to its largest entry, t to its norm, psi to itself.
    k_err = np.abs(K2 - K).max(axis=(1, 2)) / np.abs(K).max(axis=(1, 2))
    t_err = np.linalg.norm(t2 - t, axis=1) / np.linalg.norm(t, axis=1)
    assert k_err.max() < tol
    assert np.abs(R2 - R).max() < tol
    assert t_err.max() < tol
    assert (np.abs(psi2 - psi) / psi).max() < tol
    assert np.all(K2[:, 0, 0] > 0) and np.all(K2[:, 1, 1] > 0)
    np.testing.assert_array_equal(K2[:, 2], np.broadcast_to([0, 0, 1], (1000, 3)))


def test_compose_matches_definition():
    K, R, t, psi = random_cameras(20, seed=2)
    p_hat, q_hat = compose_inverse_camera(K, R, t, psi)
    P = psi[:, None, None] * K @ R
    q = psi[:, None] * np.einsum("nij,nj->ni", K, t)
    np.testing.assert_allclose(p_hat.numpy() @ P, np.broadcast_to(np.eye(3), P.shape), atol=1e-10)
    np.testing.assert_allclose(q_hat.numpy(), -np.einsum("nij,nj->ni", np.linalg.inv(P), q), rtol=1e-10)
    np.testing.assert_allclose(q_hat.numpy(), -np.einsum("nji,nj->ni", R, t), rtol=1e-12)


def test_project_and_unproject_satisfy_inverse_camera_equation():
    K, R, t, psi = random_cameras(4, seed=3)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4, 50, 3)) * 80
    pixels, depth = (a.numpy() for a in project(X, K, R, t))
    # d x = P X + q with d = psi Z.
    P = psi[:, None, None] * K @ R
    q = psi[:, None] * np.einsum("nij,nj->ni", K, t)
    d = psi[:, None] * depth
    x = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=-1)
    np.testing.assert_allclose(d[..., None] * x, np.einsum("nij,npj->npi", P, X) + q[:, None], rtol=1e-12, atol=1e-9)
    # Depth is the camera-space Z of R X + t.
    np.testing.assert_allclose(depth, (np.einsum("nij,npj->npi", R, X) + t[:, None])[..., 2], rtol=1e-12)
    # unproject inverts project, and X = P_hat (d x) + q_hat.
    np.testing.assert_allclose(unproject(pixels, depth, K, R, t).numpy(), X, atol=1e-9)
    p_hat, q_hat = (a.numpy() for a in compose_inverse_camera(K, R, t, psi))
    np.testing.assert_allclose(np.einsum("nij,npj->npi", p_hat, d[..., None] * x) + q_hat[:, None], X, atol=1e-9)


def test_frontal_camera_convention():
    """A frontal camera R = diag(1, -1, -1) sees +y up as image y up (smaller row)."""
    K = np.array([[500.0, 0, 128], [0, 500, 128], [0, 0, 1]])
    R = np.diag([1.0, -1, -1])
    t = np.array([0.0, 0, 500])
    pixels, depth = project(np.array([[0.0, 0, 0], [0, 10, 0], [10, 0, 0]]), K, R, t)
    np.testing.assert_allclose(depth.numpy(), [500, 500, 500])
    np.testing.assert_allclose(pixels.numpy(), [[128, 128], [128, 118], [138, 128]])


def test_broadcasting_over_leading_dims():
    K, R, t, psi = random_cameras(6, seed=4)
    shaped = [a.reshape((2, 3) + a.shape[1:]) for a in (K, R, t, psi)]
    p_hat, q_hat = compose_inverse_camera(*shaped)
    assert p_hat.shape == (2, 3, 3, 3) and q_hat.shape == (2, 3, 3)
    K2, R2, t2, psi2 = decompose_inverse_camera(p_hat, q_hat)
    np.testing.assert_allclose(K2.numpy(), shaped[0], rtol=1e-9, atol=1e-9)
    # One camera for many point sets (broadcast K, R, t over a batch of points).
    X = np.random.default_rng(4).normal(size=(5, 7, 3)) * 50
    pixels, depth = project(X, K[0], R[0], t[0])
    assert pixels.shape == (5, 7, 2) and depth.shape == (5, 7)


@pytest.mark.parametrize(
    "p_hat",
    [
        np.diag([1.0, 1.0, -1.0]),  # reflection: det < 0
        np.zeros((3, 3)),  # singular
        np.array([[1.0, 2, 3], [2, 4, 6], [0, 0, 1]]),  # rank 2
        np.full((3, 3), np.nan),
    ],
)
def test_degenerate_input_raises_in_eager_and_falls_back_in_graph(p_hat):
    q_hat = np.array([1.0, 2.0, 3.0])
    with pytest.raises(SolveError, match="cannot be decomposed"):
        decompose_inverse_camera(p_hat, q_hat)
    batch = np.stack([p_hat, np.eye(3) * 0.01])
    outputs = tf.function(decompose_inverse_camera)(batch, np.stack([q_hat, q_hat]))
    for out in outputs:
        assert np.all(np.isfinite(out.numpy()))
    K, R, t, psi = (a.numpy() for a in outputs)
    np.testing.assert_array_equal(K[0], np.eye(3))
    np.testing.assert_array_equal(R[0], np.eye(3))
    np.testing.assert_array_equal(t[0], -q_hat)
    np.testing.assert_allclose(psi[1], 100.0)
    np.testing.assert_array_equal(inverse_camera_is_valid(batch, np.stack([q_hat, q_hat])).numpy(), [False, True])


def test_non_strict_decomposition_flags_instead_of_raising():
    p_hat = np.stack([np.zeros((3, 3)), np.eye(3) * 0.01])
    K, R, t, psi = decompose_inverse_camera(p_hat, np.zeros((2, 3)), strict=False)
    np.testing.assert_array_equal(K.numpy()[0], np.eye(3))  # the placeholder, told apart by validity
    np.testing.assert_array_equal(inverse_camera_is_valid(p_hat, np.zeros((2, 3))).numpy(), [False, True])


def test_adjugate_is_determinant_times_inverse_and_finite_when_singular():
    matrices = np.random.default_rng(2).normal(size=(4, 3, 3))
    np.testing.assert_allclose(adjugate(matrices).numpy(),
                               np.linalg.det(matrices)[:, None, None] * np.linalg.inv(matrices), atol=1e-12)
    np.testing.assert_array_equal(adjugate(np.zeros((3, 3))).numpy(), np.zeros((3, 3)))


def _frontal_camera(focal_widths=2.0, depth=600.0, yaw=0.0, pitch=0.0, width=128.0):
    """``K, R, t`` of a camera ``depth`` mm in front of the model origin, turned by ``yaw`` and
    ``pitch`` (degrees, the camera moving around the head) from the frontal view."""
    a, b = np.radians(yaw), np.radians(pitch)
    turn_y = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turn_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    K = np.array([[focal_widths * width, 0, width / 2], [0, focal_widths * width, width / 2], [0, 0, 1]])
    return K, np.diag([1.0, -1, -1]) @ turn_y @ turn_x, np.array([0.0, 0, depth])


@pytest.mark.parametrize(("camera_args", "plausible"), [
    ({}, True),
    ({"focal_widths": 0.25}, True), ({"focal_widths": 90.0}, True),  # ultra-wide, long telephoto
    ({"focal_widths": 0.1}, False), ({"focal_widths": 1e8}, False),  # no lens (1e8: issue 22's 1.2e10 px)
    ({"depth": 150.0}, True), ({"depth": 50_000.0}, True),
    ({"depth": 50.0}, False), ({"depth": -600.0}, False), ({"depth": 2e5}, False),
    ({"yaw": 90.0}, True), ({"yaw": -95.0}, True), ({"yaw": 120.0}, False), ({"yaw": 180.0}, False),
    ({"pitch": 60.0}, True), ({"pitch": -75.0}, True), ({"pitch": 85.0}, False), ({"pitch": -89.0}, False),
    ({"yaw": 90.0, "pitch": 70.0}, True),  # a profile seen from above: no gimbal lock in the rule
])
def test_camera_plausibility_ranges(camera_args, plausible):
    K, R, t = _frontal_camera(**camera_args)
    assert bool(camera_is_plausible(K, R, t, 128.0)) is plausible


def test_placeholder_and_non_finite_cameras_are_implausible():
    K, R, t = _frontal_camera()
    cameras = [(np.eye(3), np.eye(3), -np.array([0.0, 0, 600])), (K * np.nan, R, t), (K, R, t + np.inf)]
    result = camera_is_plausible(*(np.stack(parts) for parts in zip(*cameras)), 128.0).numpy()
    np.testing.assert_array_equal(result, [False, False, False])
    assert camera.MIN_FOCAL_WIDTHS < camera.MAX_FOCAL_WIDTHS and camera.MIN_FACE_DEPTH_MM < camera.MAX_FACE_DEPTH_MM


def test_non_finite_translation_falls_back_to_zero_in_graph():
    p_hat = np.eye(3)[None]
    q_hat = np.array([[np.inf, 0.0, 0.0]])
    with pytest.raises(SolveError):
        decompose_inverse_camera(p_hat, q_hat)
    K, R, t, psi = tf.function(decompose_inverse_camera)(p_hat, q_hat)
    np.testing.assert_array_equal(t.numpy(), [[0.0, 0.0, 0.0]])


def test_compose_rejects_non_positive_scale_or_focal():
    K, R, t, psi = random_cameras(2, seed=5)
    with pytest.raises(InputError, match="psi"):
        compose_inverse_camera(K, R, t, -psi)
    K[1, 1, 1] = 0
    with pytest.raises(InputError, match="k1, k4"):
        compose_inverse_camera(K, R, t, psi)


def test_project_is_finite_at_zero_depth():
    K, R, t, _ = random_cameras(1, seed=6)
    X_cam_origin = -np.einsum("ji,j->i", R[0], t[0])  # the camera centre: Z = 0
    pixels, depth = project(X_cam_origin[None, None], K, R, t)
    assert np.all(np.isfinite(pixels.numpy()))
    assert abs(depth.numpy()[0, 0]) < 1e-9


def test_decompose_gradient_matches_finite_differences():
    K, R, t, psi = random_cameras(1, seed=7)
    p_hat, q_hat = compose_inverse_camera(K[0], R[0], t[0], psi[0])
    p_hat, q_hat = p_hat.numpy(), q_hat.numpy()
    w = np.random.default_rng(7).normal(size=(3, 3))

    def scalar(ph, qh):
        K2, R2, t2, psi2 = decompose_inverse_camera(ph, qh)
        return tf.reduce_sum(K2 * w) / 1000 + tf.reduce_sum(R2 * w) + tf.reduce_sum(t2) / 100 + psi2

    # Each argument with a step suited to its scale (p_hat entries are ~1e-3 / psi, q_hat ~1e2).
    checks = [
        (lambda ph: scalar(ph, q_hat), p_hat, 1e-6 * np.abs(p_hat).max()),
        (lambda qh: scalar(p_hat, qh), q_hat, 1e-3),
    ]
    for function, x, delta in checks:
        (theoretical,), (numerical,) = tf.test.compute_gradient(function, [x], delta=delta)
        np.testing.assert_allclose(theoretical, numerical, rtol=1e-5, atol=1e-7 * np.abs(numerical).max())


def test_project_unproject_gradients_match_finite_differences():
    K, R, t, _ = random_cameras(1, seed=8)
    X = np.random.default_rng(8).normal(size=(4, 3)) * 50
    theoretical, numerical = tf.test.compute_gradient(lambda x, k, tt: project(x, k, R[0], tt)[0], [X, K[0], t[0]])
    for a, b in zip(theoretical, numerical):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(np.abs(b).max(), 1e-12))
    pixels, depth = project(X, K[0], R[0], t[0])
    theoretical, numerical = tf.test.compute_gradient(
        lambda px, d, k: unproject(px, d, k, R[0], t[0]), [pixels.numpy(), depth.numpy(), K[0]]
    )
    for a, b in zip(theoretical, numerical):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(np.abs(b).max(), 1e-12))


def test_round_trip_tool_prints_both_dtypes(capsys):
    spec = importlib.util.spec_from_file_location("camera_round_trip", REPO_ROOT / "tools" / "camera_round_trip.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--cameras", "20"]) == 0
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"float64", "float32"}
    assert max(rows["float64"]) < 1e-9 and max(rows["float32"]) < 1e-5
