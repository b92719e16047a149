"""The repository works alone: the README's first command on the shipped sample, the shipped compact
default geometry and how close it is to the original ICT-FaceKit file (where the shared data has it).

Tolerances of the compact model (float16 bases), against the original: every basis entry within
:data:`BASIS_TOLERANCE_MM`; the 68 landmarks of random shapes, and of shapes fitted to the same
samples, within :data:`LANDMARK_TOLERANCE_MM`. Measured: 0.0019 mm (identity) and 0.0047 mm
(expression) per basis entry, 0.017 mm over 200 random shapes, 0.01 mm after a fit.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
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


def readme_try_it_command() -> list[str]:
    """The command of the README's "Try it" section, split into words."""
    readme = (paths.REPO_ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("tfface ")]
    assert len(lines) == 1, "the Try it section shows one tfface command"
    return shlex.split(lines[0])


@pytest.mark.slow
def test_readme_first_command_runs_on_a_bare_clone(tmp_path):
    command = readme_try_it_command()
    assert command[:2] == ["tfface", "reconstruct"] and command[-2] == "--out"
    images = command[2:-2]
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "tfface", *command[1:-1], str(out)], cwd=paths.REPO_ROOT,
                          env={**os.environ, **NO_SHARED}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for image in images:
        stem = os.path.splitext(os.path.basename(image))[0]
        assert (paths.REPO_ROOT / image).is_file(), f"{image} is not shipped"
        assert json.loads((out / f"{stem}.json").read_text())["faces"], "a face is found in the sample"
        for name in (f"{stem}.png", f"{stem}_face0.obj", f"{stem}_face0.png"):
            assert (out / name).stat().st_size > 0


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
    assert {path for path in paths.ASSETS_DIR.rglob("*") if path.is_file()} <= declared
    assert {"ict_face_light.npz", "LICENSE-ICT-FaceKit.txt", "face_detection_short_range.tflite",
            "face_detection_full_range_sparse.tflite", "LICENSE-mediapipe.txt"} <= {path.name for path in declared}


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
