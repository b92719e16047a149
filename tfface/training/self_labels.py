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

#: Photos labelled between two saves of :func:`label_photo_stream`.
CHUNK = 512


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
    eye = tf.eye(3, batch_shape=[tf.shape(p_hat)[0]])
    ok = tf.ones(tf.shape(p_hat)[:1], tf.bool) if valid is None else valid > 0.5
    inverse = tf.linalg.inv(tf.where(ok[:, None, None], p_hat, eye))
    fragments = rasterize(vertices, triangles, eye, inverse, -tf.linalg.matvec(inverse, q_hat), size, size)
    mask = fragments.mask[..., None] * tf.cast(ok, tf.float32)[:, None, None, None]
    uv = interpolate(vertex_uv, triangles, fragments)
    return tf.concat([uv * mask, fragments.depth[..., None] * mask, mask], -1)


def label_photos(model: FaceModel, batches: Iterable[tf.Tensor],
                 progress: tqdm | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit photos with ``model``'s inference fit and render each valid fit's maps.

    Args:
        model: a trained :class:`tfface.model.FaceModel`.
        batches: ``(B, S, S, 3)`` float32 photos in [0, 1], ``S`` the model's image size.
        progress: a bar advanced by every photo fitted.

    Returns:
        ``images`` ``(N, S, S, 3)`` uint8 and ``maps`` ``(N, S, S, 4)`` float16 of the photos
        whose fit is valid and covers at least :data:`MIN_FACE_PIXELS` pixels.
    """
    from tfface.training.evaluation import compiled_outputs

    infer = compiled_outputs(model)
    uv_model = model.uv_model
    triangles = tf.constant(uv_model.model.triangles, tf.int32)
    vertex_uv = tf.constant(uv_model.vertex_uv, tf.float32)
    size = model.config.image_size
    render = tf.function(lambda v, p, q, ok: fit_maps_of(v, p, q, triangles, vertex_uv, size, ok),
                         reduce_retracing=True)
    images, maps = [np.zeros((0, size, size, 3), np.uint8)], [np.zeros((0, size, size, 4), np.float16)]
    for batch in batches:
        outputs = infer(batch)
        rendered = render(outputs["vertices"], outputs["p_hat"], outputs["q_hat"], outputs["fit_valid"]).numpy()
        keep = rendered[..., 3].sum((1, 2)) >= MIN_FACE_PIXELS  # a failed fit's maps are empty
        images.append(np.round(np.asarray(batch)[keep] * 255).astype(np.uint8))
        maps.append(rendered[keep].astype(np.float16))
        if progress is not None:
            progress.update(len(keep))
    return np.concatenate(images), np.concatenate(maps)


def label_photo_stream(model: FaceModel, photos: tf.data.Dataset, count: int, out: str | Path, chunk: int = CHUNK,
                       batch_size: int = 16) -> int:
    """Label the first ``count`` photos of a deterministic stream into ``out`` (``.npz``), resumably.

    Every ``chunk`` photos are saved as they are done (``<out>.parts/``); a run killed and started
    again passes over the saved chunks' photos and labels the rest. The chunks are merged into
    ``out`` at the end and removed.

    Args:
        photos: unbatched ``(S, S, 3)`` float32 photos in [0, 1], the same on every run.

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
            images, maps = label_photos(model, batches, progress)
            np.savez(parts / "partial.npz", images=images, maps=maps)
            (parts / "partial.npz").replace(paths[index])
    saved = [np.load(path) for path in paths]
    images = np.concatenate([part["images"] for part in saved])
    maps = np.concatenate([part["maps"] for part in saved])
    if not len(images):
        raise InputError(f"no photo could be labelled: every one of the {count} fits failed")
    np.savez(out, images=images, maps=maps)
    for path in paths:
        path.unlink()
    parts.rmdir()
    return len(images)


def labelled_photos(path: str | Path, image_size: int) -> tf.data.Dataset:
    """The labelled photos of an ``.npz`` (``images`` ``(N, S, S, 3)`` uint8, ``maps`` ``(N, S, S, 4)``).

    The file is read once per process (a training run's pretraining and pose anchor share it).

    Returns:
        Dataset of dicts ``image`` ``(S, S, 3)`` float32 in [0, 1] and ``maps`` ``(S, S, 4)`` float32.

    Raises:
        InputError: no such file, or arrays of the wrong shapes.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError(f"no self-labelled photos at {path}")
    images, maps = _labelled_arrays(path, path.stat().st_mtime_ns)
    if images.shape[1:] != (image_size, image_size, 3) or maps.shape != images.shape[:3] + (4,):
        raise InputError(f"{path}: expected images (N, {image_size}, {image_size}, 3) and maps (N, ..., 4), "
                         f"got {tuple(images.shape)} and {tuple(maps.shape)}")
    data = tf.data.Dataset.from_tensor_slices({"image": images, "maps": maps})
    return data.map(lambda x: {"image": tf.cast(x["image"], tf.float32) / 255.0,
                               "maps": tf.cast(x["maps"], tf.float32)})


@functools.lru_cache(maxsize=2)
def _labelled_arrays(path: Path, modified_ns: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``(images, maps)`` of a labelled ``.npz`` as tensors, cached by path and modification time."""
    try:
        with np.load(path) as archive:
            return tf.constant(archive["images"]), tf.constant(archive["maps"])
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{path} holds no self-labelled photos (images and maps): {error}") from error
