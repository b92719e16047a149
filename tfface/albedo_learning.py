r"""An albedo basis learnt from real photos (GitHub issue 19, item 3; DESIGN "Albedo prior").

The default model has no colour model, only the documented prior of :mod:`tfface.albedo`, which
cannot explain eyes, brows, nostrils or lips. This module learns one from fits of a trained
network to photos, in three steps.

**Unwrapping** (:func:`unwrap`, :func:`unwrap_fit`). The photometric solve models a sample's
colour :math:`i_j` (the softplus-preprocessed pixel, supplement E: the colour the solve sees, so
the learnt albedo lives where the solve's albedo model does) as
:math:`\mathrm{albedo}_j = i_j \odot (F_j l)`, with :math:`F_j` the 9 SH basis values of the fitted
normal and :math:`l` the 27 fitted inverse-SH coefficients
(:func:`tfface.layers.photometric.inverse_shading`). Each sample's albedo is splatted onto the 3
vertices of the UV-3DMM triangle under its correspondence with weights
``barycentric x omega_j``, ``omega_j`` = photometric x geometric confidence x validity (optionally
0 where the photometric residual exceeds a bound), giving per photo and vertex a weighted mean
albedo ``(V, 3)`` and its *coverage* ``(V,)`` (the summed weights: one fully confident pixel at a
vertex adds 1). Splatting is a weighted average, not an inverse of barycentric interpolation: it
is exact where samples sit on vertices or the albedo is locally constant, and otherwise blurs by
about one triangle (at the network's resolution, about one pixel). Only these per-vertex arrays
are kept (:class:`AlbedoAccumulator`), never the pixels.

**Statistics** (:func:`learn_albedo`). Photo ``n`` observes vertex ``v`` with weight
``w_nv = min(1, coverage_nv / full_coverage)`` (:data:`FULL_COVERAGE`: one confident pixel).
Vertices a photo does not see are missing data; the principal components come from weighted EM
PCA (Srebro and Jaakkola, "Weighted low-rank approximations", ICML 2003): starting from the
weighted per-vertex mean, repeat "fill ``X = R + W (A - R)`` (observed values where seen, the
current rank-K reconstruction ``R`` elsewhere; ``W`` blends for partial weights), re-estimate the
mean and the K leading components of ``X`` (eigenvectors of the N x N Gram matrix), reconstruct"
until the fill changes by less than ``tolerance`` (relative) or after ``iterations`` rounds. With
every vertex seen (``W = 1``) this is plain PCA, exact in one round. Modes are scaled by their
standard deviation (population variance, divided by N; coefficients ~ N(0, 1)), sorted by
decreasing variance, each signed so that its largest entry is positive (as the prior's).

**Fallback and range.** A vertex seen in ``c_v = sum_n w_nv`` photo equivalents has *support*
``s_v = min(1, c_v / min_photos)`` (:data:`MIN_PHOTOS`): the learnt mean is blended with the
prior's, ``s_v mean + (1 - s_v) prior``, and the modes are multiplied by ``s_v``, so rarely seen
vertices (ears, the back of the neck) fall back smoothly to the prior's mean with no variation,
and the result is defined everywhere. Finally the mean is clipped to :data:`ALBEDO_RANGE` and
each vertex's modes are shrunk (one factor per vertex, keeping their colour direction) so that
mean +- 3 standard deviations stays inside it. Only the largest modes change much: the stored
``variance`` is the PCA's, before blending and shrinking.

**Files** (:func:`save_learnt_albedo`, :func:`load_learnt_albedo`, :func:`with_learnt_albedo`): an
npz with format tag :data:`LEARNT_ALBEDO_FORMAT`, ``albedo_mean`` ``(V, 3)`` and ``albedo_basis``
``(K, V, 3)`` float32, ``variance`` ``(K,)``, ``support`` ``(V,)`` and provenance (``photos``,
``model``, ``sources``). The vertices are those of the UV-3DMM's hole-filled model the fits used.
"""

from __future__ import annotations

import dataclasses
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import tensorflow as tf

from tfface.errors import InputError, ModelFileError
from tfface.layers.photometric import inverse_shading
from tfface.morphable.model import MorphableModel

if TYPE_CHECKING:
    from tfface.model import FaceModel

#: Format tag of learnt-albedo files.
LEARNT_ALBEDO_FORMAT = "tfface-learnt-albedo/1"

#: Coverage (summed splat weight) at which a photo counts as fully observing a vertex.
FULL_COVERAGE = 1.0

#: Photo equivalents a vertex needs for full support (fewer blend towards the prior).
MIN_PHOTOS = 25.0

#: EM rounds at most, and the relative change of the fill that stops them earlier.
EM_ITERATIONS = 30
EM_TOLERANCE = 1e-3

#: Range of the learnt mean and of mean +- 3 standard deviations (reflectance).
ALBEDO_RANGE = (0.02, 1.0)

_ARRAYS = ("albedo_mean", "albedo_basis", "variance", "support")
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


def splat(values: tf.Tensor, vertex_ids: tf.Tensor, barycentrics: tf.Tensor, weights: tf.Tensor,
          num_vertices: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Sum sample values onto triangle vertices with weights ``barycentric x weight``.

    Args:
        values: ``(B, P, C)`` per-sample values.
        vertex_ids: ``(B, P, 3)`` int vertices of the triangle under each sample.
        barycentrics: ``(B, P, 3)`` weights of those vertices (0 for invalid samples).
        weights: ``(B, P)`` per-sample weights ``>= 0``.
        num_vertices: V.

    Returns:
        ``sums`` ``(B, V, C)`` weighted sums and ``coverage`` ``(B, V)`` summed weights.
    """
    batch = tf.shape(values)[0]
    count = batch * num_vertices
    segments = vertex_ids + num_vertices * tf.range(batch)[:, None, None]  # (B, P, 3) ids into B x V
    corner_weights = barycentrics * weights[..., None]  # (B, P, 3)
    sums = tf.math.unsorted_segment_sum(corner_weights[..., None] * values[:, :, None, :], segments, count)
    coverage = tf.math.unsorted_segment_sum(corner_weights, segments, count)
    return tf.reshape(sums, [batch, num_vertices, -1]), tf.reshape(coverage, [batch, num_vertices])


def unwrap(colours: tf.Tensor, normals: tf.Tensor, lighting: tf.Tensor, vertex_ids: tf.Tensor,
           barycentrics: tf.Tensor, weights: tf.Tensor, num_vertices: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-vertex albedo of photos: samples' ``colour x inverse shading`` splatted (:func:`splat`).

    Args:
        colours: ``(B, P, 3)`` sample colours as the photometric solve saw them (softplus-preprocessed).
        normals: ``(B, P, 3)`` unit normals the lighting was fitted against.
        lighting: ``(B, 3, 9)`` fitted inverse-SH coefficients.
        vertex_ids, barycentrics: ``(B, P, 3)`` the UV-3DMM triangle under each sample.
        weights: ``(B, P)`` sample weights ``>= 0``.
        num_vertices: V.

    Returns:
        ``albedo`` ``(B, V, 3)`` coverage-weighted mean albedo of each vertex (0 where uncovered)
        and ``coverage`` ``(B, V)``.
    """
    albedo = colours * inverse_shading(normals, lighting)
    sums, coverage = splat(albedo, vertex_ids, barycentrics, weights, num_vertices)
    covered = coverage > 0
    safe = tf.where(covered, coverage, tf.ones_like(coverage))
    return tf.where(covered[..., None], sums / safe[..., None], tf.zeros_like(sums)), coverage


def sample_weights(fit: Mapping[str, tf.Tensor], max_residual: float | None = None) -> tf.Tensor:
    """``(B, P)`` unwrapping weight of each sample of a :meth:`~tfface.model.FaceModel.fit_maps`
    result: photometric x geometric confidence x validity, 0 where the photometric residual's
    norm (albedo units) exceeds ``max_residual`` (if given)."""
    weights = fit["photometric_confidence"] * fit["geometric_confidence"] * fit["valid"]
    if max_residual is None:
        return weights
    inliers = tf.norm(fit["photometric_residual"], axis=-1) <= max_residual
    return weights * tf.cast(inliers, weights.dtype)


def unwrap_fit(fit: Mapping[str, tf.Tensor], num_vertices: int,
               max_residual: float | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`unwrap` a :meth:`~tfface.model.FaceModel.fit_maps` result with :func:`sample_weights`.

    Returns:
        ``albedo`` ``(B, V, 3)`` and ``coverage`` ``(B, V)``.
    """
    return unwrap(fit["colours"], fit["normals"], fit["lighting"], fit["vertex_ids"], fit["barycentrics"],
                  sample_weights(fit, max_residual), num_vertices)


@dataclasses.dataclass
class AlbedoAccumulator:
    """Per-photo unwrapped albedo and coverage, gathered batch by batch (no pixel is kept).

    Attributes:
        num_vertices: V.
    """

    num_vertices: int
    _albedo: list = dataclasses.field(default_factory=list, repr=False)
    _coverage: list = dataclasses.field(default_factory=list, repr=False)

    def add(self, albedo: np.ndarray, coverage: np.ndarray) -> None:
        """Keep photos' ``albedo`` ``(B, V, 3)`` and ``coverage`` ``(B, V)`` (float32)."""
        albedo, coverage = np.asarray(albedo, np.float32), np.asarray(coverage, np.float32)
        if albedo.shape[1:] != (self.num_vertices, 3) or coverage.shape != albedo.shape[:2]:
            raise InputError(f"expected albedo (B, {self.num_vertices}, 3) and coverage (B, {self.num_vertices}), "
                             f"got {albedo.shape} and {coverage.shape}")
        self._albedo.append(albedo)
        self._coverage.append(coverage)

    @property
    def photos(self) -> int:
        return sum(len(a) for a in self._albedo)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``albedo`` ``(N, V, 3)`` and ``coverage`` ``(N, V)`` of every photo added."""
        if not self._albedo:
            return np.zeros((0, self.num_vertices, 3), np.float32), np.zeros((0, self.num_vertices), np.float32)
        return np.concatenate(self._albedo), np.concatenate(self._coverage)


def unwrap_photos(model: FaceModel, batches: Iterable, accumulator: AlbedoAccumulator,
                  max_residual: float | None = None, progress: Callable[[int], None] | None = None) -> int:
    """Fit ``model`` to image batches as inference does and unwrap every valid fit.

    Args:
        model: a trained :class:`~tfface.model.FaceModel`.
        batches: ``(B, S, S, 3)`` float32 RGB images in [0, 1] at the model's size.
        accumulator: receives the unwrapped photos whose fit is valid (``fit_valid``).
        max_residual: see :func:`sample_weights`.
        progress: called with the number of photos of each batch.

    Returns:
        The number of photos skipped for a failed fit.
    """
    num_vertices = model.uv_model.model.num_vertices

    @tf.function
    def step(images):
        fit = model.inference_fit(images)
        albedo, coverage = unwrap_fit(fit, num_vertices, max_residual)
        return albedo, coverage, model.outputs_of(fit)["fit_valid"] > 0

    skipped = 0
    for images in batches:
        albedo, coverage, valid = (t.numpy() for t in step(images))
        accumulator.add(albedo[valid], coverage[valid])
        skipped += int(np.sum(~valid))
        if progress is not None:
            progress(len(valid))
    return skipped


@dataclasses.dataclass(frozen=True)
class LearntAlbedo:
    """A learnt albedo model and where it came from.

    Attributes:
        mean: ``(V, 3)`` float32 mean reflectance.
        basis: ``(K, V, 3)`` float32 modes scaled by their standard deviation, decreasing variance.
        variance: ``(K,)`` float32 PCA variance of each mode, of the whole ``(V, 3)`` offset (its
            squared norm; before the support blend and the range guard).
        support: ``(V,)`` float32 in [0, 1]: 1 where the photos determine the vertex, 0 where
            the prior's mean stands in.
        photos: number of photos unwrapped.
        model: the network (weights) and morphable model the fits used.
        sources: the photo folders.
    """

    mean: np.ndarray
    basis: np.ndarray
    variance: np.ndarray
    support: np.ndarray
    photos: int = 0
    model: str = ""
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("mean", "basis", "variance", "support"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), np.float32))
        v = self.mean.shape[0] if self.mean.ndim == 2 else -1
        shapes = {"albedo_mean": (self.mean, (v, 3)), "albedo_basis": (self.basis, (len(self.variance), v, 3)),
                  "variance": (self.variance, (len(self.basis),)), "support": (self.support, (v,))}
        for name, (array, shape) in shapes.items():
            if array.shape != shape or v <= 0:
                raise ModelFileError(f"learnt albedo: {name} must be {shape}, got {array.shape}")
            if not np.all(np.isfinite(array)):
                raise ModelFileError(f"learnt albedo: {name} has NaN or infinite values")


def _leading_components(centred: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` leading squared singular values ``(K,)`` (decreasing) and unit right singular
    vectors ``(K, D)`` of ``centred`` ``(N, D)``, from the smaller of its two Gram matrices;
    directions of (numerically) zero singular value are returned as zero rows."""
    n, d = centred.shape
    small = min(n, d)
    gram = centred @ centred.T if n <= d else centred.T @ centred
    values, vectors = scipy.linalg.eigh(gram, subset_by_index=[small - count, small - 1])
    values, vectors = np.maximum(values[::-1], 0.0), vectors[:, ::-1]
    if n > d:
        return values, vectors.T
    scale = np.sqrt(values)
    usable = scale > 1e-9 * max(scale.max(), np.finfo(float).tiny)
    rows = (vectors.T @ centred) / np.where(usable, scale, 1.0)[:, None]
    return values, np.where(usable[:, None], rows, 0.0)


def weighted_pca(data: np.ndarray, weights: np.ndarray, count: int, initial_mean: np.ndarray,
                 iterations: int = EM_ITERATIONS, tolerance: float = EM_TOLERANCE,
                 progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and principal components of rows with missing or partly weighted entries (weighted EM
    PCA, see the module docstring).

    Args:
        data: ``(N, D)`` observations (any value where the weight is 0).
        weights: ``(N, D)`` in [0, 1]: 1 observed, 0 missing.
        count: components K (``<= min(N, D)``).
        initial_mean: ``(D,)`` stands in for the mean of entries no row observes.
        iterations: EM rounds at most (>= 1).
        tolerance: stop once the fill changes by less than this, relative to its spread.
        progress: called with that relative change after every round.

    Returns:
        ``mean`` ``(D,)``, ``components`` ``(K, D)`` unit rows and ``variances`` ``(K,)``
        (squared singular values over N), decreasing.
    """
    n = data.shape[0]
    total = weights.sum(axis=0)
    seen = total > 0
    mean = np.where(seen, (weights * data).sum(axis=0) / np.where(seen, total, 1.0), initial_mean)
    fill = mean + weights * (data - mean)
    for _ in range(max(1, iterations)):
        mean = fill.mean(axis=0)
        centred = fill - mean
        values, components = _leading_components(centred, count)
        low_rank = mean + (centred @ components.T) @ components
        refilled = low_rank + weights * (data - low_rank)
        change = np.linalg.norm(refilled - fill) / max(np.linalg.norm(centred), np.finfo(float).tiny)
        fill = refilled
        if progress is not None:
            progress(change)
        if change <= tolerance:
            break
    return mean, components, values / n


def _signed(components: np.ndarray) -> np.ndarray:
    """Each row with the sign that makes its largest-magnitude entry positive."""
    largest = components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)]
    return components * np.where(largest < 0, -1.0, 1.0)[:, None]


def within_range(mean: np.ndarray, basis: np.ndarray, bounds: tuple[float, float] = ALBEDO_RANGE
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` ``(V, 3)`` clipped to ``bounds`` and ``basis`` ``(K, V, 3)`` shrunk per vertex so that
    mean +- 3 standard deviations stays inside them in every channel."""
    low, high = bounds
    mean = np.clip(mean, low, high)
    sd = np.sqrt(np.sum(np.square(basis), axis=0))  # (V, 3)
    room = np.minimum(mean - low, high - mean)
    factor = np.min(np.where(3.0 * sd > room, room / np.maximum(3.0 * sd, np.finfo(float).tiny), 1.0), axis=1)
    return mean, basis * factor[None, :, None]


def learn_albedo(albedo: np.ndarray, coverage: np.ndarray, prior_mean: np.ndarray, num_modes: int, *,
                 full_coverage: float = FULL_COVERAGE, min_photos: float = MIN_PHOTOS,
                 iterations: int = EM_ITERATIONS, tolerance: float = EM_TOLERANCE,
                 progress: Callable[[float], None] | None = None, model: str = "",
                 sources: Sequence[str] = ()) -> LearntAlbedo:
    """The albedo model of unwrapped photos (module docstring: statistics, fallback and range).

    Args:
        albedo: ``(N, V, 3)`` per-photo vertex albedo (:class:`AlbedoAccumulator`).
        coverage: ``(N, V)`` their coverage.
        prior_mean: ``(V, 3)`` the prior's mean, for rarely seen vertices.
        num_modes: K, fewer than the photos.
        full_coverage: coverage at which a photo fully observes a vertex (> 0).
        min_photos: photo equivalents for full support (> 0).
        iterations, tolerance, progress: of :func:`weighted_pca`.
        model, sources: provenance.

    Raises:
        InputError: inconsistent shapes, too few photos for ``num_modes`` or bad parameters.
    """
    albedo, coverage = np.asarray(albedo, np.float64), np.asarray(coverage, np.float64)
    prior_mean = np.asarray(prior_mean, np.float64)
    n, v = coverage.shape if coverage.ndim == 2 else (0, 0)
    if albedo.shape != (n, v, 3) or prior_mean.shape != (v, 3) or v == 0:
        raise InputError(f"albedo (N, V, 3), coverage (N, V) and prior mean (V, 3) disagree: "
                         f"{albedo.shape}, {coverage.shape}, {prior_mean.shape}")
    if not 0 < num_modes < n:
        raise InputError(f"{num_modes} modes need more photos than modes, got {n} photos")
    if not (full_coverage > 0 and min_photos > 0):
        raise InputError(f"full_coverage and min_photos must be positive, got {full_coverage} and {min_photos}")
    observed = np.clip(coverage / full_coverage, 0.0, 1.0)
    mean, components, variance = weighted_pca(albedo.reshape(n, 3 * v), np.repeat(observed, 3, axis=1), num_modes,
                                              prior_mean.reshape(-1), iterations, tolerance, progress)
    basis = (np.sqrt(variance)[:, None] * _signed(components)).reshape(num_modes, v, 3)
    support = np.clip(observed.sum(axis=0) / min_photos, 0.0, 1.0)
    blended = support[:, None] * mean.reshape(v, 3) + (1.0 - support[:, None]) * prior_mean
    mean, basis = within_range(blended, support[None, :, None] * basis)
    return LearntAlbedo(mean, basis, variance, support, n, model, tuple(str(s) for s in sources))


def save_learnt_albedo(learnt: LearntAlbedo, path: str | Path) -> None:
    """Write ``learnt`` as an npz (read back by :func:`load_learnt_albedo`)."""
    with open(path, "wb") as handle:
        np.savez(handle, format=np.array(LEARNT_ALBEDO_FORMAT), albedo_mean=learnt.mean,
                 albedo_basis=learnt.basis, variance=learnt.variance, support=learnt.support,
                 photos=np.array(learnt.photos), model=np.array(learnt.model), sources=np.array(learnt.sources, str))


def load_learnt_albedo(path: str | Path) -> LearntAlbedo:
    """Read a file written by :func:`save_learnt_albedo`.

    Raises:
        ModelFileError: missing, truncated or corrupt file, wrong format tag, missing keys or
            inconsistent arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data.files or str(data["format"]) != LEARNT_ALBEDO_FORMAT:
                raise ModelFileError(f"{path}: not a learnt albedo file (no format tag {LEARNT_ALBEDO_FORMAT!r})")
            missing = [k for k in (*_ARRAYS, "photos", "model", "sources") if k not in data.files]
            if missing:
                raise ModelFileError(f"{path}: learnt albedo file is missing {', '.join(missing)}")
            arrays = {k: data[k] for k in _ARRAYS}
            provenance = int(data["photos"]), str(data["model"]), tuple(str(s) for s in data["sources"])
    except ModelFileError:
        raise
    except _READ_ERRORS as error:
        raise ModelFileError(f"{path}: cannot read learnt albedo file ({error})") from error
    try:
        return LearntAlbedo(arrays["albedo_mean"], arrays["albedo_basis"], arrays["variance"], arrays["support"],
                            *provenance)
    except ModelFileError as error:
        raise ModelFileError(f"{path}: {error}") from error


def with_learnt_albedo(model: MorphableModel, path: str | Path) -> MorphableModel:
    """``model`` with its colour model replaced by the learnt albedo in ``path``.

    Raises:
        ModelFileError: unreadable file (:func:`load_learnt_albedo`) or a vertex count other than
            ``model``'s.
    """
    learnt = load_learnt_albedo(path)
    if learnt.mean.shape[0] != model.num_vertices:
        raise ModelFileError(f"{path}: learnt albedo has {learnt.mean.shape[0]} vertices, model {model.name} has "
                             f"{model.num_vertices}; learn it with this model's UV-3DMM")
    return dataclasses.replace(model, albedo_mean=learnt.mean, albedo_basis=learnt.basis)
