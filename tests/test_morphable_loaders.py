"""Loading morphable models: ICT default, Basel Face Model 2017 layout, project npz, bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import grid_mesh, toy_model

from tfface.errors import ModelFileError
from tfface.morphable import loaders
from tfface.morphable.topology import boundary_loops


def orthonormal_columns(rows: int, cols: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, cols)))
    return q


def write_bfm(path, points, triangles, landmarks=True, flip=False, seed=0, drop=None):
    """Write a BFM 2017 layout HDF5 file; returns the unit bases and variances that went in."""
    n = len(points)
    rng = np.random.default_rng(seed)
    parts = {}
    with h5py.File(path, "w") as h5:
        for k, (group, count) in enumerate((("shape", 5), ("color", 4), ("expression", 3))):
            basis = orthonormal_columns(3 * n, count, seed + k)
            variance = np.sort(rng.uniform(1.0, 400.0, count))[::-1]
            if group == "shape":
                mean = points.ravel()
            elif group == "color":
                mean = rng.uniform(0.3, 0.7, 3 * n)
            else:
                mean = rng.normal(0.0, 0.5, 3 * n)
            parts[group] = (mean, basis, variance)
            if group == drop:
                continue
            h5[f"{group}/model/mean"] = mean.astype(np.float32)
            h5[f"{group}/model/pcaBasis"] = basis.astype(np.float32)
            h5[f"{group}/model/pcaVariance"] = variance.astype(np.float32)
            h5[f"{group}/model/noiseVariance"] = np.float32(1e-4)
            h5[f"{group}/representer/points"] = points.T.astype(np.float32)
            cells = triangles[:, [0, 2, 1]] if flip else triangles
            h5[f"{group}/representer/cells"] = cells.T.astype(np.int32)
        if landmarks:
            h5["landmarks68"] = np.arange(68, dtype=np.int32) * 2
    return parts


@pytest.fixture(scope="module")
def grid():
    return grid_mesh(12, hole=(4, 7, 3, 5))


def test_default_model_is_the_narrow_ict_face_with_albedo_prior(default_model, default_model_path):
    raw = np.load(default_model_path)
    assert default_model.num_vertices == int(raw["narrow_vertex_count"]) == 6706
    assert default_model.triangles.shape == (13120, 3)
    np.testing.assert_array_equal(default_model.mean, raw["mean"][:6706])
    expression = np.float32(raw["expression_basis"][:, :6706])  # stored in float16, loaded in float32
    np.testing.assert_allclose(default_model.expression_basis, 0.3 * expression, rtol=1e-6)
    np.testing.assert_array_equal(default_model.landmarks68, raw["landmarks68"])
    assert default_model.num_shape == 100 and default_model.num_expression == 53 and default_model.num_albedo == 40
    loop_sizes = sorted(len(loop) for loop in boundary_loops(default_model.triangles))
    assert loop_sizes == [42, 42, 74, 138]  # README: outer 138, mouth 74, eyes 42 and 42


def test_full_ict_face_area_keeps_all_vertices(default_model_path):
    full = loaders.load_model(default_model_path, narrow=False)
    assert full.num_vertices == 9409 and full.triangles.shape == (18460, 3)


def test_project_npz_round_trip(tmp_path, grid):
    model = toy_model(*grid)
    loaders.save_model(model, tmp_path / "m.npz")
    again = loaders.load_model(tmp_path / "m.npz")
    for field in ("mean", "shape_basis", "expression_basis", "albedo_mean", "albedo_basis", "triangles", "landmarks68"):
        np.testing.assert_array_equal(getattr(again, field), getattr(model, field))
    assert again.name == model.name


def test_bfm2017_layout_loads_with_bases_scaled_by_sqrt_variance(tmp_path, grid):
    points, triangles = grid
    parts = write_bfm(tmp_path / "bfm.h5", points, triangles)
    model = loaders.load_model(tmp_path / "bfm.h5")
    n = len(points)
    shape_mean, shape_u, shape_var = parts["shape"]
    expr_mean, expr_u, expr_var = parts["expression"]
    colour_mean, colour_u, colour_var = parts["color"]
    np.testing.assert_allclose(model.mean, (shape_mean + expr_mean).reshape(n, 3), rtol=1e-5, atol=1e-4)
    for basis, u, var in ((model.shape_basis, shape_u, shape_var), (model.expression_basis, expr_u, expr_var),
                          (model.albedo_basis, colour_u, colour_var)):
        # Coefficient i moves vertex j by sqrt(var_i) * U[3j:3j+3, i]: unit columns scaled to std.
        expected = (u * np.sqrt(var)).T.reshape(-1, n, 3)
        np.testing.assert_allclose(basis, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(basis.reshape(len(var), -1), axis=1), np.sqrt(var), rtol=1e-4)
    np.testing.assert_allclose(model.albedo_mean, colour_mean.reshape(n, 3), rtol=1e-6)
    np.testing.assert_array_equal(model.triangles, triangles)
    np.testing.assert_array_equal(model.landmarks68, np.arange(68) * 2)
    assert model.name == "bfm2017"


def test_bfm2017_back_facing_cells_are_flipped_to_face_the_viewer(tmp_path, grid):
    points, triangles = grid
    write_bfm(tmp_path / "bfm.h5", points, triangles, flip=True)
    np.testing.assert_array_equal(loaders.load_model(tmp_path / "bfm.h5").triangles, triangles)


def test_bfm2017_landmarks_from_a_file_or_a_clear_error(tmp_path, grid):
    points, triangles = grid
    write_bfm(tmp_path / "bfm.h5", points, triangles, landmarks=False)
    with pytest.raises(ModelFileError, match="landmarks"):
        loaders.load_model(tmp_path / "bfm.h5")
    np.savetxt(tmp_path / "lm.txt", np.arange(68) + 3, fmt="%d")
    model = loaders.load_model(tmp_path / "bfm.h5", landmarks=tmp_path / "lm.txt")
    np.testing.assert_array_equal(model.landmarks68, np.arange(68) + 3)
    np.savetxt(tmp_path / "short.txt", np.arange(60), fmt="%d")
    with pytest.raises(ModelFileError, match="68"):
        loaders.load_model(tmp_path / "bfm.h5", landmarks=tmp_path / "short.txt")


@pytest.mark.parametrize("group", ["shape", "color", "expression"])
def test_bfm2017_missing_group_is_named(tmp_path, grid, group):
    write_bfm(tmp_path / "bfm.h5", *grid, drop=group)
    with pytest.raises(ModelFileError, match=f"{group}/model/mean"):
        loaders.load_model(tmp_path / "bfm.h5")


def test_bfm2017_wrong_shapes_are_reported(tmp_path, grid):
    points, triangles = grid
    write_bfm(tmp_path / "bfm.h5", points, triangles)
    with h5py.File(tmp_path / "bfm.h5", "a") as h5:
        del h5["color/model/pcaBasis"]
        h5["color/model/pcaBasis"] = np.zeros((3 * len(points) - 3, 4), np.float32)
    with pytest.raises(ModelFileError, match="color/model/pcaBasis"):
        loaders.load_model(tmp_path / "bfm.h5")
    write_bfm(tmp_path / "bfm2.h5", points, triangles)
    with h5py.File(tmp_path / "bfm2.h5", "a") as h5:
        del h5["shape/representer/cells"]
        h5["shape/representer/cells"] = triangles.astype(np.int32)  # (T, 3) instead of (3, T)
    with pytest.raises(ModelFileError, match="cells"):
        loaders.load_model(tmp_path / "bfm2.h5")
    write_bfm(tmp_path / "bfm3.h5", points, triangles)
    with h5py.File(tmp_path / "bfm3.h5", "a") as h5:
        del h5["expression/model/pcaVariance"]
        h5["expression/model/pcaVariance"] = np.ones(7, np.float32)
    with pytest.raises(ModelFileError, match="expression/model/pcaVariance"):
        loaders.load_model(tmp_path / "bfm3.h5")


@pytest.mark.parametrize("kind", ["h5", "npz"])
def test_truncated_files_raise_model_file_error(tmp_path, grid, kind):
    path = tmp_path / f"model.{kind}"
    if kind == "h5":
        write_bfm(path, *grid)
    else:
        loaders.save_model(toy_model(*grid), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        loaders.load_model(path)


def test_garbage_missing_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="not a morphable model"):
        loaders.load_model(garbage)
    with pytest.raises(ModelFileError, match="no such"):
        loaders.load_model(tmp_path / "absent.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ModelFileError, match="identity_basis"):
        loaders.load_model(tmp_path / "other.npz")


def test_ict_npz_missing_key_is_named(tmp_path, default_model_path):
    raw = dict(np.load(default_model_path))
    del raw["expression_basis"]
    np.savez(tmp_path / "ict.npz", **raw)
    with pytest.raises(ModelFileError, match="expression_basis"):
        loaders.load_model(tmp_path / "ict.npz")


def test_project_npz_with_wrong_shapes_is_rejected(tmp_path, grid):
    model = toy_model(*grid)
    loaders.save_model(model, tmp_path / "m.npz")
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["shape_basis"] = arrays["shape_basis"][:, :-1]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="shape_basis"):
        loaders.load_model(tmp_path / "bad.npz")
