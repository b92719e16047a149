"""Photos labelled with a trained network's own fits, as pretraining examples (self-training).

A trained network's inference fit of an unlabelled photo is a 3DMM under an inverse camera
``X = P_hat d x + q_hat`` (:meth:`tfface.model.FaceModel.fit_maps`). Rendered back into the photo's
frame it gives exact maps of that fit, as :func:`tfface.training.pretraining.pretraining_targets`
renders the template: u, v, the fit's depth ``d`` (network units) and the face region. Photos so
labelled supervise a further pretraining beside the template's examples (``TrainConfig.self_labels``):
their targets follow each photo's own face, which the one template cannot.
"""

from __future__ import annotations

import functools
import itertools
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfface.errors import InputError
from tfface.render.rasterizer import interpolate, rasterize

if TYPE_CHECKING:
    from tfface.model import FaceModel

#: Fewest face pixels a labelled photo's rendered fit must cover to be kept.
MIN_FACE_PIXELS = 200

#: The fit's own arrays a labelled file keeps beside ``images`` and ``maps``: enough to turn the
#: fitted face (:class:`tfface.training.profiling.FitProfiler`).
FIT_KEYS = ("vertices", "p_hat", "q_hat", "R")

#: Largest fitted yaw (degrees) of a labelled photo that is turned on its own fit: a turned face
#: takes its colours from the photo, which shows little of a face already turned away. The fitted
#: yaw is about half the true one on real photos (BUILD.md, "Where the error lies: pose").
PROFILABLE_YAW = 10.0

#: Smallest fitted yaw (degrees) of a labelled photo that counts as a turned head for
#: ``TrainConfig.self_label_turned_repeat``: some 25-30 degrees of true yaw, since the fits turn
#: real heads about 0.6 of the way (BUILD.md, "Turned heads shown more often").
TURNED_YAW = 15.0

#: Photos labelled between two saves of :func:`label_photo_stream`.
CHUNK = 512


def fit_camera(p_hat: tf.Tensor, q_hat: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The camera ``(K, R, t)`` of invertible inverse cameras ``p_hat`` ``(B, 3, 3)``, ``q_hat``
    ``(B, 3)``: ``K = I``, ``R = P_hat^-1``, ``t = -P_hat^-1 q_hat`` (:func:`fit_maps_of`), under
    which a fitted mesh projects where the fit put it, at the network's depth ``d``."""
    inverse = tf.linalg.inv(p_hat)
    return tf.eye(3, batch_shape=[tf.shape(p_hat)[0]]), inverse, -tf.linalg.matvec(inverse, q_hat)


def fit_maps_of(vertices: tf.Tensor, p_hat: tf.Tensor, q_hat: tf.Tensor, triangles: tf.Tensor,
                vertex_uv: tf.Tensor, size: int, valid: tf.Tensor | None = None) -> tf.Tensor:
    """Render fitted meshes under their inverse cameras into pretraining target maps.

    The inverse camera maps a pixel ``x`` (homogeneous) with depth ``d`` to the model point
    ``X = P_hat d x + q_hat``, so the camera-space point ``P_hat^-1 (X - q_hat)`` has depth ``d``
    and projects to ``x``: the mesh is rasterised with ``K = I``, ``R = P_hat^-1`` and
    ``t = -P_hat^-1 q_hat``.

    Args:
        vertices: ``(B, V, 3)`` fitted vertices (mm, model space).
        p_hat: ``(B, 3, 3)`` and q_hat ``(B, 3)``: the fitted inverse camera (invertible).
        triangles: ``(T, 3)`` int32; vertex_uv: ``(V, 2)`` UV of every vertex.
        size: side of the square maps in pixels.
        valid: ``(B,)`` 1 where the fit is valid (``fit_valid``). A failed fit's camera may be
            singular (a placeholder of zeros), which no inverse exists for: it is not inverted and
            its maps are empty. None: every fit is valid.

    Returns:
        ``(B, size, size, 4)`` float32 u, v, depth ``d`` and face region (0 off the face).
    """
    ok = tf.ones(tf.shape(p_hat)[:1], tf.bool) if valid is None else valid > 0.5
    camera = fit_camera(tf.where(ok[:, None, None], p_hat, tf.eye(3, batch_shape=[tf.shape(p_hat)[0]])), q_hat)
    fragments = rasterize(vertices, triangles, *camera, size, size)
    mask = fragments.mask[..., None] * tf.cast(ok, tf.float32)[:, None, None, None]
    uv = interpolate(vertex_uv, triangles, fragments)
    return tf.concat([uv * mask, fragments.depth[..., None] * mask, mask], -1)


def turned_further(vertices: tf.Tensor, q_hat: tf.Tensor, landmarks68: tf.Tensor | np.ndarray,
                   gain: float) -> tf.Tensor:
    """Fitted meshes with their heads turned further, as a label that undoes the fits' shortfall.

    A fit's camera centre in model space is ``q_hat`` (the point of depth ``d = 0``); its azimuth
    ``a = atan2(q_x, q_z)`` about the model's vertical axis is the fit's turn. Each mesh is turned
    about the vertical axis through its landmarks' centroid by ``a - g a`` (``g a`` held within
    +-90 degrees, a profile), so that, under the same inverse camera, the head is seen from ``g``
    times its fitted azimuth: real turned heads are fitted about 0.55 of the way round (BUILD.md,
    "Labels turned further").

    Args:
        vertices: ``(B, V, 3)`` fitted vertices (mm, model space).
        q_hat: ``(B, 3)`` the fits' inverse camera translations (mm).
        landmarks68: ``(68,)`` int vertex indices of the 68 landmarks.
        gain: ``g``, the factor on the fitted azimuth (1: the mesh unchanged).

    Returns:
        ``(B, V, 3)`` the turned vertices (mm, model space).
    """
    from tfface.training.profiling import turn_matrices

    vertices, q_hat = tf.cast(vertices, tf.float32), tf.cast(q_hat, tf.float32)
    azimuth = tf.atan2(q_hat[:, 0], q_hat[:, 2])
    target = tf.clip_by_value(gain * azimuth, -np.pi / 2, np.pi / 2)
    turn = turn_matrices(azimuth - target, tf.zeros_like(azimuth))
    centre = tf.reduce_mean(tf.gather(vertices, landmarks68, axis=1), 1, keepdims=True)
    return tf.einsum("bij,bvj->bvi", turn, vertices - centre) + centre


def label_photos(model: FaceModel, batches: Iterable[tf.Tensor],
                 progress: tqdm | None = None, turn_gain: float = 1.0) -> dict[str, np.ndarray]:
    """Fit photos with ``model``'s inference fit and render each valid fit's maps.

    Args:
        model: a trained :class:`tfface.model.FaceModel`.
        batches: ``(B, S, S, 3)`` float32 photos in [0, 1], ``S`` the model's image size.
        progress: a bar advanced by every photo fitted.
        turn_gain: the maps are rendered from each fit's mesh turned to this factor on its fitted
            azimuth (:func:`turned_further`); the fits are kept as fitted.

    Returns:
        Arrays of the ``N`` photos whose fit is valid and covers at least :data:`MIN_FACE_PIXELS`
        pixels: ``images`` ``(N, S, S, 3)`` uint8, ``maps`` ``(N, S, S, 4)`` float16 and the fits
        themselves, :data:`FIT_KEYS`: ``vertices`` ``(N, V, 3)`` float16 (mm), the inverse camera
        ``p_hat`` ``(N, 3, 3)`` and ``q_hat`` ``(N, 3)`` and the camera's rotation ``R``
        ``(N, 3, 3)`` (model to camera space), float32.

    Raises:
        InputError: ``turn_gain`` not positive.
    """
    if not turn_gain > 0:
        raise InputError(f"turn_gain must be positive, got {turn_gain}")
    from tfface.training.evaluation import compiled_outputs

    infer = compiled_outputs(model)
    uv_model = model.uv_model
    triangles = tf.constant(uv_model.model.triangles, tf.int32)
    vertex_uv = tf.constant(uv_model.vertex_uv, tf.float32)
    size = model.config.image_size
    render = tf.function(lambda v, p, q, ok: fit_maps_of(v, p, q, triangles, vertex_uv, size, ok),
                         reduce_retracing=True)
    vertex_count = uv_model.model.mean.shape[0]
    parts = {"images": [np.zeros((0, size, size, 3), np.uint8)], "maps": [np.zeros((0, size, size, 4), np.float16)],
             "vertices": [np.zeros((0, vertex_count, 3), np.float16)], "p_hat": [np.zeros((0, 3, 3), np.float32)],
             "q_hat": [np.zeros((0, 3), np.float32)], "R": [np.zeros((0, 3, 3), np.float32)]}
    for batch in batches:
        outputs = infer(batch)
        vertices = outputs["vertices"]
        if turn_gain != 1.0:
            vertices = turned_further(vertices, outputs["q_hat"], uv_model.model.landmarks68, turn_gain)
        rendered = render(vertices, outputs["p_hat"], outputs["q_hat"], outputs["fit_valid"]).numpy()
        keep = rendered[..., 3].sum((1, 2)) >= MIN_FACE_PIXELS  # a failed fit's maps are empty
        parts["images"].append(np.round(np.asarray(batch)[keep] * 255).astype(np.uint8))
        parts["maps"].append(rendered[keep].astype(np.float16))
        for key in FIT_KEYS:
            parts[key].append(outputs[key].numpy()[keep].astype(parts[key][0].dtype))
        if progress is not None:
            progress.update(len(keep))
    return {key: np.concatenate(arrays) for key, arrays in parts.items()}


def label_photo_stream(model: FaceModel, photos: tf.data.Dataset, count: int, out: str | Path, chunk: int = CHUNK,
                       batch_size: int = 16, turn_gain: float = 1.0) -> int:
    """Label the first ``count`` photos of a deterministic stream into ``out`` (``.npz``), resumably.

    Every ``chunk`` photos are saved as they are done (``<out>.parts/``); a run killed and started
    again passes over the saved chunks' photos and labels the rest. The chunks are merged into
    ``out`` at the end and removed.

    Args:
        photos: unbatched ``(S, S, 3)`` float32 photos in [0, 1], the same on every run.
        turn_gain: :func:`label_photos`' factor on the fitted azimuth of the rendered maps.

    Returns:
        The number of photos labelled.

    Raises:
        InputError: when no photo could be labelled (every fit failed).
    """
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    paths = [parts / f"chunk-{index:05d}.npz" for index in range(-(-count // chunk))]
    first = next((index for index, path in enumerate(paths) if not path.exists()), len(paths))
    stream = iter(photos.skip(first * chunk).take(count - first * chunk))
    with tqdm(total=count, initial=min(first * chunk, count), unit="photo", desc="self-label") as progress:
        for index in range(first, len(paths)):
            taken = list(itertools.islice(stream, min(chunk, count - index * chunk)))
            if paths[index].exists():  # saved by an earlier run: its photos are passed over
                progress.update(len(taken))
                continue
            batches = (tf.stack(taken[i:i + batch_size]) for i in range(0, len(taken), batch_size))
            np.savez(parts / "partial.npz", **label_photos(model, batches, progress, turn_gain))
            (parts / "partial.npz").replace(paths[index])
    saved = [np.load(path) for path in paths]
    arrays = {key: np.concatenate([part[key] for part in saved]) for key in saved[0].files}
    if not len(arrays["images"]):
        raise InputError(f"no photo could be labelled: every one of the {count} fits failed")
    np.savez(out, **arrays)
    for path in paths:
        path.unlink()
    parts.rmdir()
    return len(arrays["images"])


def labelled_photos(path: str | Path, image_size: int, fits: bool = False, turned_repeat: int = 1,
                    seed: int = 0) -> tf.data.Dataset:
    """The labelled photos of an ``.npz`` (``images`` ``(N, S, S, 3)`` uint8, ``maps`` ``(N, S, S, 4)``).

    The file is read once per process (a training run's pretraining and pose anchor share it).

    Args:
        path: the file :func:`label_photo_stream` wrote.
        image_size: the side ``S`` the photos must have.
        fits: also give each photo's fit (:data:`FIT_KEYS`), for
            :class:`tfface.training.profiling.FitProfiler`; only the photos whose fitted yaw is
            under :data:`PROFILABLE_YAW` are given.
        turned_repeat: without ``fits``, how many times each photo whose fitted yaw is at least
            :data:`TURNED_YAW` is given; above 1 the photos come in an order shuffled by ``seed``
            and the file must keep its fits' rotations ``R``.
        seed: the seed of that order.

    Returns:
        Dataset of dicts ``image`` ``(S, S, 3)`` float32 in [0, 1] and ``maps`` ``(S, S, 4)`` float32,
        with ``fits`` a dict ``fit`` of the :data:`FIT_KEYS` arrays as well (float32).

    Raises:
        InputError: no such file, arrays of the wrong shapes, no fits in a file asked for them or
            for their yaws, or ``turned_repeat`` under 1.
    """
    if not turned_repeat >= 1:
        raise InputError(f"turned_repeat must be at least 1, got {turned_repeat}")
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError(f"no self-labelled photos at {path}")
    arrays = _labelled_arrays(path, path.stat().st_mtime_ns)
    images, maps = arrays["images"], arrays["maps"]
    if images.shape[1:] != (image_size, image_size, 3) or maps.shape != images.shape[:3] + (4,):
        raise InputError(f"{path}: expected images (N, {image_size}, {image_size}, 3) and maps (N, ..., 4), "
                         f"got {tuple(images.shape)} and {tuple(maps.shape)}")
    if (fits or turned_repeat > 1) and not set(FIT_KEYS) <= set(arrays):
        raise InputError(f"{path} keeps no fits ({', '.join(FIT_KEYS)}): label the photos again with this "
                         "version's `tfface self-label`")
    from tfface.training.profiling import fitted_yaw

    if not fits:
        if turned_repeat > 1:
            order = _turned_repeated(fitted_yaw(arrays["R"]).numpy(), turned_repeat, seed)
            images, maps = tf.gather(images, order), tf.gather(maps, order)
        data = tf.data.Dataset.from_tensor_slices({"image": images, "maps": maps})
    else:
        keep = tf.where(fitted_yaw(arrays["R"]) < np.radians(PROFILABLE_YAW))[:, 0]
        if not len(keep):
            raise InputError(f"{path}: no fit is near-frontal (fitted yaw under {PROFILABLE_YAW} degrees)")
        data = tf.data.Dataset.from_tensor_slices({
            "image": tf.gather(images, keep), "maps": tf.gather(maps, keep),
            "fit": {key: tf.gather(arrays[key], keep) for key in FIT_KEYS}})
    return data.map(_as_floats)


def _turned_repeated(yaw: np.ndarray, repeat: int, seed: int) -> np.ndarray:
    """Indices ``(N + (repeat - 1) T,)`` of ``N`` labelled photos in a random order, each of the ``T``
    whose fitted yaw ``yaw`` ``(N,)`` (radians) is at least :data:`TURNED_YAW` ``repeat`` times."""
    turned = np.flatnonzero(np.abs(yaw) >= np.radians(TURNED_YAW))
    return np.random.default_rng(seed).permutation(np.concatenate([np.arange(len(yaw)), np.repeat(turned, repeat - 1)]))


def _as_floats(example: dict) -> dict:
    """A labelled example's arrays as float32, its image in [0, 1]."""
    example = {**example, "image": tf.cast(example["image"], tf.float32) / 255.0,
               "maps": tf.cast(example["maps"], tf.float32)}
    if "fit" in example:
        example["fit"] = {key: tf.cast(value, tf.float32) for key, value in example["fit"].items()}
    return example


@functools.lru_cache(maxsize=2)
def _labelled_arrays(path: Path, modified_ns: int) -> dict[str, tf.Tensor]:
    """Every array of a labelled ``.npz`` as a tensor, cached by path and modification time."""
    try:
        with np.load(path) as archive:
            arrays = {key: tf.constant(archive[key]) for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{path} holds no self-labelled photos (images and maps): {error}") from error
    if not {"images", "maps"} <= set(arrays):
        raise InputError(f"{path} holds no self-labelled photos (images and maps): it has {sorted(arrays)}")
    return arrays
