"""The repository works alone: the shipped compact default geometry, and how close it is to the
original ICT-FaceKit file (where the shared data has it).

Tolerances of the compact model (float16 bases), against the original: every basis entry within
:data:`BASIS_TOLERANCE_MM`; the 68 landmarks of random shapes, and of shapes fitted to the same
samples, within :data:`LANDMARK_TOLERANCE_MM`. Measured: 0.0019 mm (identity) and 0.0047 mm
(expression) per basis entry, 0.017 mm over 200 random shapes, 0.01 mm after a fit.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_or_skip
from tfface import paths
from tfface.layers import least_squares_synthetic as synthetic
from tfface.layers.geometric import solve_geometry
from tfface.morphable import loaders
from tfface.morphable.uv3dmm import UVMorphableModel

#: Largest difference of a basis entry (mm per unit coefficient) between compact and original.
BASIS_TOLERANCE_MM = 0.005
#: Largest distance of a landmark (mm) between shapes of the compact and the original model.
LANDMARK_TOLERANCE_MM = 0.05
#: A shared folder that does not exist: a clone with nothing beside it.
NO_SHARED = {paths.SHARED_ENV: "/nonexistent/tfface-shared"}


def test_default_model_needs_no_shared_folder(monkeypatch):
    monkeypatch.setenv(paths.SHARED_ENV, NO_SHARED[paths.SHARED_ENV])
    assert paths.shared_path("models", "ict_face_light.npz") is None
    assert paths.original_ict_model_path() is None
    assert paths.default_model_path().is_relative_to(paths.ASSETS_DIR)
    model = loaders.load_default_model()
    assert model.num_vertices == 6706 and model.num_shape == 100 and model.num_expression == 53


def test_package_data_carries_every_asset():
    """An installed (not editable) package has the assets only if pyproject declares them."""
    with open(paths.REPO_ROOT / "pyproject.toml", "rb") as handle:
        patterns = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["tfface"]
    package = paths.ASSETS_DIR.parent
    declared = {path for pattern in patterns for path in package.glob(pattern)}
    assert set(paths.ASSETS_DIR.iterdir()) <= declared
    assert {"ict_face_light.npz", "LICENSE-ICT-FaceKit.txt"} <= {path.name for path in declared}


def test_compact_asset_is_small():
    assert paths.default_model_path().stat().st_size < 8e6


@pytest.fixture(scope="module")
def original_uv_model() -> UVMorphableModel:
    """The UV-3DMM of the original ICT-FaceKit Light file of the shared data (skips without it)."""
    return UVMorphableModel.build(loaders.load_ict(shared_or_skip("models", "ict_face_light.npz")))


def _landmarks(uv_model: UVMorphableModel, coefficients: np.ndarray) -> np.ndarray:
    """``(B, 68, 3)`` float64 landmark positions (mm) of shapes with ``coefficients`` ``(B, Ks + Ke)``."""
    m = uv_model.model
    basis = np.concatenate([m.shape_basis, m.expression_basis])[:, m.landmarks68].astype(np.float64)
    return m.mean[m.landmarks68] + np.einsum("bk,kvc->bvc", coefficients, basis)


def test_compact_model_is_the_original_within_float16_rounding(default_uv_model, original_uv_model):
    compact, original = default_uv_model.model, original_uv_model.model
    for field in ("mean", "triangles", "landmarks68", "albedo_mean"):
        np.testing.assert_array_equal(getattr(compact, field), getattr(original, field), err_msg=field)
    np.testing.assert_array_equal(default_uv_model.vertex_uv, original_uv_model.vertex_uv)
    for field in ("shape_basis", "expression_basis"):
        np.testing.assert_allclose(getattr(compact, field), getattr(original, field), rtol=0,
                                   atol=BASIS_TOLERANCE_MM, err_msg=field)
    coefficients = np.random.default_rng(0).normal(size=(200, compact.num_shape + compact.num_expression))
    moved = _landmarks(default_uv_model, coefficients) - _landmarks(original_uv_model, coefficients)
    assert np.linalg.norm(moved, axis=-1).max() < LANDMARK_TOLERANCE_MM


def test_fit_on_the_compact_model_matches_the_original(default_uv_model, original_uv_model):
    """Exact samples of random shapes of the original model under random cameras, fitted with each."""
    rng = np.random.default_rng(1)
    uv = tf.constant(rng.uniform(size=(2, 3000, 2)), tf.float32)
    samples = {"compact": default_uv_model.sample(uv), "original": original_uv_model.sample(uv)}
    truth = samples["original"]
    coefficients = rng.normal(size=(2, truth.basis.shape[-1]))
    cameras = synthetic.random_cameras(rng, 2)
    points = np.float64(truth.mean) + np.einsum("bpck,bk->bpc", np.float64(truth.basis), coefficients)
    in_camera = np.einsum("bij,bpj->bpi", cameras["R"], points) + cameras["t"][:, None]
    projected = np.einsum("bij,bpj->bpi", cameras["K"], in_camera)
    pixels = tf.constant(projected[..., :2] / projected[..., 2:], tf.float32)
    depth = tf.constant(cameras["psi"][:, None] * in_camera[..., 2], tf.float32)
    fits = {name: solve_geometry(pixels, depth, sample.valid, sample.mean, sample.basis,
                                 tf.fill([coefficients.shape[1]], 1e-6))
            for name, sample in samples.items()}
    landmarks = {name: _landmarks(uv_model, np.float64(fits[name]["coefficients"]))
                 for name, uv_model in (("compact", default_uv_model), ("original", original_uv_model))}
    moved = np.linalg.norm(landmarks["compact"] - landmarks["original"], axis=-1)
    assert moved.max() < LANDMARK_TOLERANCE_MM
    assert np.linalg.norm(landmarks["original"] - _landmarks(original_uv_model, coefficients), axis=-1).max() < 0.01
    p_hat = {name: fit["p_hat"].numpy() for name, fit in fits.items()}  # (2, 3, 3), the inverse camera
    assert np.abs(p_hat["compact"] - p_hat["original"]).max() < 1e-4 * np.abs(p_hat["original"]).max()
