"""Shared fixtures: the open default model and its UV-3DMM, built once per session and cached;
the optional shared research data, which tests needing it skip without.

The default model is the compact copy shipped in the package, so the suite runs on a bare clone.
The cache lives in ``$TFFACE_CACHE`` (default ``~/.cache/tfface``), keyed by a hash of the
default model file and of the source of the code that builds it, so an edit to that code or a new
model file rebuilds. Files are written atomically, so concurrent test sessions can share the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from tfface import paths
from tfface.runtime import use_pooled_cpu_allocator

use_pooled_cpu_allocator()  # as the ``tfface`` command runs

#: Source files whose content decides the cached default model and UV-3DMM.
_BUILD_SOURCES = ("tfface/albedo.py", "tfface/morphable")


def cache_dir() -> Path:
    """Folder of cached test assets: ``$TFFACE_CACHE``, else ``~/.cache/tfface``, else a temp folder."""
    for folder in (Path(os.environ.get("TFFACE_CACHE", Path.home() / ".cache" / "tfface")),
                   Path(tempfile.gettempdir()) / "tfface-cache"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError("no writable cache folder; set TFFACE_CACHE")


def _content_key(*files: Path) -> str:
    digest = hashlib.sha256()
    for source in _BUILD_SOURCES:
        path = paths.REPO_ROOT / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.read_bytes())
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:16]


def _cached(name: str, build, save, load, *inputs: Path):
    """Load ``name`` from the cache, or build it, store it atomically and return it."""
    path = cache_dir() / f"{name}-{_content_key(*inputs)}.npz"
    if path.exists():
        from tfface.errors import ModelFileError

        try:
            return load(path)
        except ModelFileError:
            path.unlink(missing_ok=True)
    value = build()
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(handle)
    save(value, tmp)
    os.replace(tmp, path)
    return value


def shared_or_skip(*parts: str) -> Path:
    """``paths.shared_path(*parts)``, or skip the calling test, saying what is missing and where.

    Args:
        parts: path components below the shared research-data folder, e.g. ``("data", "celeba")``.
    """
    path = paths.shared_path(*parts)
    if path is None:
        pytest.skip(f"needs {Path(*parts)} of the shared research data, absent from {paths.shared_dir()} "
                    f"(set {paths.SHARED_ENV} to the folder holding it)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared research data's ``data/`` folder (real photos); tests using it skip without it."""
    return shared_or_skip("data")


@pytest.fixture(scope="session")
def runner():
    """The shipped model (:data:`tfface.reconstruct.DEFAULT_MODEL`) as an :class:`~tfface.export.ExportedModel`."""
    from tfface.export import ExportedModel
    from tfface.reconstruct import DEFAULT_MODEL

    return ExportedModel(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def detector():
    """The BlazeFace :class:`~tfface.detection.blazeface.FaceDetector` with its default settings."""
    from tfface.detection.blazeface import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The compact ICT-FaceKit Light npz shipped in the package."""
    path = paths.default_model_path()
    assert path.is_file(), f"the default model is missing from the package at {path}"
    return path


@pytest.fixture(scope="session")
def default_model(default_model_path):
    """The default :class:`MorphableModel` (ICT narrow face area + albedo prior)."""
    from tfface.morphable import loaders

    return _cached("default-model", loaders.load_default_model, loaders.save_model, loaders.load_model,
                   default_model_path)


@pytest.fixture(scope="session")
def default_uv_model(default_model, default_model_path):
    """The :class:`UVMorphableModel` of the default model at 320 x 320."""
    from tfface.morphable.uv3dmm import UVMorphableModel

    return _cached("default-uv3dmm-320", lambda: UVMorphableModel.build(default_model),
                   lambda value, path: value.save(path), UVMorphableModel.load, default_model_path)


def grid_mesh(n: int = 12, hole: tuple[int, int, int, int] | None = None, angle: float = 0.0):
    """A bumpy ``n x n`` grid over ``[-50, 50]^2`` mm, counter-clockwise from +z.

    Args:
        n: vertices per side.
        hole: ``(i0, i1, j0, j1)``: the grid vertices with ``i0 <= col < i1`` and ``j0 <= row < j1``
            and their triangles are removed, leaving one clean inner boundary loop.
        angle: rotation (radians) of the grid about z.

    Returns:
        ``points`` ``(N, 3)`` float64 and ``triangles`` ``(T, 3)`` int32 (unused vertices removed).
    """
    import numpy as np

    c = np.linspace(-50.0, 50.0, n)
    x, y = np.meshgrid(c, c)
    z = 30.0 * np.exp(-(x**2 + y**2) / 2000.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    xy = np.stack([x.ravel(), y.ravel()], 1) @ rot.T
    points = np.column_stack([xy, z.ravel()])
    idx = np.arange(n * n).reshape(n, n)  # [row, col], row grows with y
    v00, v10, v01, v11 = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    triangles = np.concatenate([np.stack([v00, v10, v11], -1).reshape(-1, 3),
                                np.stack([v00, v11, v01], -1).reshape(-1, 3)])
    if hole is not None:
        i0, i1, j0, j1 = hole
        removed = idx[j0:j1, i0:i1].ravel()
        triangles = triangles[~np.isin(triangles, removed).any(axis=1)]
    used = np.unique(triangles)
    remap = np.full(n * n, -1)
    remap[used] = np.arange(used.size)
    return points[used], remap[triangles].astype(np.int32)


def toy_model(points, triangles, num_shape: int = 4, num_expression: int = 3, num_albedo: int = 2, seed: int = 0):
    """A :class:`MorphableModel` on a given mesh with smooth random bases and 68 spread landmarks."""
    import numpy as np

    from tfface.morphable.model import MorphableModel

    rng = np.random.default_rng(seed)
    n = len(points)
    freq = rng.normal(size=(num_shape + num_expression + num_albedo, 3, 3)) / 40.0
    phase = rng.uniform(0, 2 * np.pi, size=(len(freq), 3))
    waves = np.sin(np.einsum("kcd,nd->knc", freq, points) + phase[:, None, :])  # (K, N, 3)
    return MorphableModel(
        mean=points, shape_basis=3.0 * waves[:num_shape], expression_basis=2.0 * waves[num_shape:num_shape + num_expression],
        albedo_mean=np.full((n, 3), 0.5) + 0.1 * waves[0], albedo_basis=0.05 * waves[num_shape + num_expression:],
        triangles=triangles, landmarks68=np.linspace(0, n - 1, 68).astype(np.int32), name="toy")


@pytest.fixture(scope="session")
def toy_uv_model():
    """A :class:`UVMorphableModel` of a 12 x 12 grid with one hole, at 32 x 32 texels."""
    from tfface.morphable.uv3dmm import UVMorphableModel

    return UVMorphableModel.build(toy_model(*grid_mesh(12, hole=(4, 7, 3, 5))), resolution=32)
