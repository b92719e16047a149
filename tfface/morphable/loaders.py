"""Reading and writing morphable models: ICT-FaceKit npz, Basel Face Model 2017 HDF5, project npz.

:func:`load_model` recognises the format from the file's content, not its name:

* **ICT-FaceKit Light npz** (the copy shipped in ``tfface/assets`` with float16 bases, see its
  README, or the original with float32 bases; both load in float32): identity modes already
  scaled by their standard deviation; expression blendshapes are one-sided
  (weight 1 = full expression), so they are scaled by :data:`ICT_EXPRESSION_SIGMA` to make
  coefficients roughly N(0, 1) (a coefficient of 1 is 30 % of the full blendshape; negative
  coefficients extrapolate to the "opposite" expression). By default only the narrow face area is
  kept (vertices ``0 .. narrow_vertex_count - 1`` and the triangles entirely inside it). ICT has no
  colour model; the albedo prior of :mod:`tfface.albedo` is attached.
* **Basel Face Model 2017 HDF5**: groups ``shape``, ``color`` and ``expression``, each with
  ``model/{mean (3N,), pcaBasis (3N, K), pcaVariance (K,)}``; ``shape/representer/{points (3, N),
  cells (3, T)}``. Means are per-vertex interleaved ``x0 y0 z0 x1 ...`` in mm; basis columns are
  orthonormal, so they are multiplied by ``sqrt(pcaVariance)`` (coefficients N(0, 1)). The
  expression mean (the mean expression offset) is added to the shape mean. Triangles are flipped if
  needed so that they are counter-clockwise seen from the front (+z). BFM carries no 68-point
  landmarks: they come from a ``landmarks68`` dataset (68 vertex indices) in the file or from the
  ``landmarks`` argument (an array or a ``.npy`` / text file of 68 indices); without either the
  load fails with a :class:`ModelFileError` that says so.
* **project npz** written by :func:`save_model` (format tag :data:`MODEL_FORMAT`).

Every failure (missing file, unrecognised content, missing key, truncated or corrupt data, wrong
shape) raises :class:`tfface.errors.ModelFileError` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfface import albedo, paths
from tfface.errors import ModelFileError
from tfface.morphable.model import MorphableModel

if TYPE_CHECKING:
    import numpy.typing as npt

#: Prior standard deviation of an ICT expression blendshape weight.
ICT_EXPRESSION_SIGMA = 0.3

#: Format tag of the project's own model files.
MODEL_FORMAT = "tfface-morphable-model/1"

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"

_ICT_KEYS = ("mean", "identity_basis", "expression_basis", "triangles", "landmarks68", "narrow_vertex_count")
#: Array fields of :class:`MorphableModel` stored in model files.
MODEL_FIELDS = ("mean", "shape_basis", "expression_basis", "albedo_mean", "albedo_basis", "triangles", "landmarks68")
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


def load_model(path: str | Path, *, narrow: bool = True,
               landmarks: npt.ArrayLike | str | Path | None = None) -> MorphableModel:
    """Load a morphable model, recognising ICT npz, BFM 2017 HDF5 or project npz by content.

    Args:
        path: the model file.
        narrow: ICT only: keep the narrow face area (the default model's choice).
        landmarks: BFM only: 68 vertex indices (array-like) or a ``.npy`` / text file holding them;
            overrides a ``landmarks68`` dataset in the file.

    Raises:
        ModelFileError: missing, unrecognised, truncated or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(HDF5_SIGNATURE):
        return load_bfm2017(path, landmarks=landmarks)
    if head.startswith(ZIP_SIGNATURE):
        try:
            with np.load(path, allow_pickle=False) as data:
                files = set(data.files)
        except _READ_ERRORS as error:
            raise ModelFileError(f"{path}: cannot read npz archive ({error})") from error
        if "format" in files:
            return _load_project(path)
        if "identity_basis" in files or "narrow_vertex_count" in files:
            return load_ict(path, narrow=narrow)
        raise ModelFileError(f"{path}: npz archive is neither a tfface model (no 'format' key) nor "
                             f"ICT-FaceKit (no 'identity_basis' key); it has {sorted(files)}")
    raise ModelFileError(f"{path}: not a morphable model file (expected an ICT-FaceKit npz, a Basel Face "
                         f"Model 2017 HDF5 file or a tfface npz)")


def load_default_model(narrow: bool = True) -> MorphableModel:
    """The open default model shipped with the package: ICT-FaceKit Light with the albedo prior.

    Args:
        narrow: keep the narrow face area (6,706 vertices) rather than the full one (9,409).
    """
    path = paths.default_model_path()
    if not path.is_file():
        raise ModelFileError(f"the default model is missing from the package at {path}; reinstall tfface or "
                             f"rebuild it with tools/make_compact_ict.py from the original ICT-FaceKit npz")
    return load_ict(path, narrow=narrow)


def _require(data, keys, path: Path, what: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ModelFileError(f"{path}: {what} is missing {', '.join(missing)}")


def load_ict(path: str | Path, narrow: bool = True) -> MorphableModel:
    """Load ICT-FaceKit Light npz (see module docstring) with the albedo prior attached."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            _require(data.files, _ICT_KEYS, path, "ICT-FaceKit npz")
            arrays = {k: data[k] for k in _ICT_KEYS}
    except ModelFileError:
        raise
    except _READ_ERRORS as error:
        raise ModelFileError(f"{path}: cannot read ICT-FaceKit npz ({error})") from error
    mean, triangles = arrays["mean"], arrays["triangles"]
    n = int(arrays["narrow_vertex_count"]) if narrow else mean.shape[0]
    if triangles.ndim != 2 or triangles.shape[1:] != (3,):
        raise ModelFileError(f"{path}: triangles must be (T, 3), got {triangles.shape}")
    triangles = triangles[np.all(triangles < n, axis=1)]
    name = "ict-face-light-narrow" if narrow else "ict-face-light"
    model = MorphableModel(
        mean=mean[:n], shape_basis=arrays["identity_basis"][:, :n],
        expression_basis=ICT_EXPRESSION_SIGMA * arrays["expression_basis"][:, :n].astype(np.float32),
        albedo_mean=np.zeros((n, 3)), albedo_basis=np.zeros((0, n, 3)),
        triangles=triangles, landmarks68=arrays["landmarks68"], name=name)
    return with_albedo_prior(model)


def with_albedo_prior(model: MorphableModel) -> MorphableModel:
    """``model`` with its colour model replaced by the albedo prior of :mod:`tfface.albedo`."""
    mean, basis = albedo.albedo_prior(model.mean, model.triangles, model.landmarks68)
    return dataclasses.replace(model, albedo_mean=mean, albedo_basis=basis)


def _read_landmarks(landmarks) -> np.ndarray:
    if isinstance(landmarks, (str, Path)):
        try:
            suffix = Path(landmarks).suffix
            values = np.load(landmarks) if suffix == ".npy" else np.loadtxt(landmarks, delimiter="," if suffix == ".csv" else None)
        except _READ_ERRORS as error:
            raise ModelFileError(f"{landmarks}: cannot read landmark indices ({error})") from error
    else:
        values = np.asarray(landmarks)
    values = np.asarray(values).ravel()
    if values.shape != (68,) or not np.all(np.equal(np.mod(values, 1), 0)):
        raise ModelFileError(f"landmarks must be 68 integer vertex indices, got {values.shape[0]} values")
    return values.astype(np.int32)


def _bfm_component(h5, group: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(N, 3)`` and std-scaled basis ``(K, N, 3)`` of one BFM 2017 PCA model group."""
    keys = [f"{group}/model/{k}" for k in ("mean", "pcaBasis", "pcaVariance")]
    _require(h5, keys, path, "Basel Face Model 2017 file")
    mean, basis, variance = (np.asarray(h5[k][()], np.float64) for k in keys)
    if mean.ndim != 1 or mean.size % 3:
        raise ModelFileError(f"{path}: {group}/model/mean must be (3N,), got {mean.shape}")
    if basis.ndim != 2 or basis.shape[0] != mean.size:
        raise ModelFileError(f"{path}: {group}/model/pcaBasis must be ({mean.size}, K), got {basis.shape}")
    if variance.shape != (basis.shape[1],):
        raise ModelFileError(f"{path}: {group}/model/pcaVariance must be ({basis.shape[1]},), got {variance.shape}")
    if np.any(variance < 0) or not np.all(np.isfinite(variance)):
        raise ModelFileError(f"{path}: {group}/model/pcaVariance must be finite and non-negative")
    n = mean.size // 3
    scaled = (basis * np.sqrt(variance)).T.reshape(-1, n, 3)
    return mean.reshape(n, 3), scaled


def load_bfm2017(path: str | Path, landmarks: npt.ArrayLike | str | Path | None = None) -> MorphableModel:
    """Load a Basel Face Model 2017 HDF5 file (see module docstring)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            shape_mean, shape_basis = _bfm_component(h5, "shape", path)
            colour_mean, colour_basis = _bfm_component(h5, "color", path)
            expr_mean, expr_basis = _bfm_component(h5, "expression", path)
            _require(h5, ["shape/representer/cells"], path, "Basel Face Model 2017 file")
            cells = np.asarray(h5["shape/representer/cells"][()])
            stored_landmarks = np.asarray(h5["landmarks68"][()]) if "landmarks68" in h5 else None
    except ModelFileError:
        raise
    except _READ_ERRORS as error:
        raise ModelFileError(f"{path}: cannot read Basel Face Model 2017 HDF5 ({error})") from error
    n = shape_mean.shape[0]
    for name, m in (("color", colour_mean), ("expression", expr_mean)):
        if m.shape[0] != n:
            raise ModelFileError(f"{path}: {name} model has {m.shape[0]} vertices, shape model has {n}")
    if cells.ndim != 2 or cells.shape[0] != 3:
        raise ModelFileError(f"{path}: shape/representer/cells must be (3, T), got {cells.shape}")
    if landmarks is None and stored_landmarks is None:
        raise ModelFileError(f"{path}: Basel Face Model 2017 has no 68-point landmarks; add a 'landmarks68' "
                             f"dataset of 68 vertex indices or pass landmarks (--landmarks FILE)")
    landmark_ids = _read_landmarks(stored_landmarks if landmarks is None else landmarks)
    mean = shape_mean + expr_mean
    triangles = orient_front(mean, cells.T.astype(np.int64), path)
    return MorphableModel(mean=mean, shape_basis=shape_basis, expression_basis=expr_basis,
                          albedo_mean=colour_mean, albedo_basis=colour_basis, triangles=triangles,
                          landmarks68=landmark_ids, name="bfm2017")


def orient_front(points: np.ndarray, triangles: np.ndarray, path: Path | str = "model") -> np.ndarray:
    """Triangles reordered if needed so that they are counter-clockwise seen from +z."""
    if triangles.size == 0 or triangles.min() < 0 or triangles.max() >= len(points):
        raise ModelFileError(f"{path}: triangle indices must be in [0, {len(points)})")
    p = points[triangles]
    normal_z = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2].sum()
    return triangles if normal_z >= 0 else triangles[:, [0, 2, 1]]


def save_model(model: MorphableModel, path: str | Path) -> None:
    """Write ``model`` as a project npz (read back by :func:`load_model`)."""
    with open(path, "wb") as handle:
        np.savez(handle, format=np.array(MODEL_FORMAT), name=np.array(model.name),
                 **{f: getattr(model, f) for f in MODEL_FIELDS})


def _load_project(path: Path) -> MorphableModel:
    try:
        with np.load(path, allow_pickle=False) as data:
            tag = str(data["format"])
            if tag != MODEL_FORMAT:
                raise ModelFileError(f"{path}: format {tag!r} is not a morphable model ({MODEL_FORMAT!r})")
            _require(data.files, (*MODEL_FIELDS, "name"), path, "tfface model npz")
            arrays = {f: data[f] for f in MODEL_FIELDS}
            name = str(data["name"])
    except ModelFileError:
        raise
    except _READ_ERRORS as error:
        raise ModelFileError(f"{path}: cannot read tfface model npz ({error})") from error
    return MorphableModel(**arrays, name=name)
