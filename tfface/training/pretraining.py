"""Supervision of the network pretraining (supplement F, Fig. 12).

The network is first trained to predict, for roughly aligned images, one fixed set of maps:
a constant depth, a face-region confidence (1 on the face, 0 elsewhere) and the correspondence
map of the 3DMM's mean shape placed so that its five landmarks fall on the mean 5-landmark
position of the aligned images. The same maps serve every image; both the image and the maps
then go through the same random 2D similarity (:func:`tfface.data.augment.augment_batch`).
No landmark or 3D ground truth of any individual image is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfface.data.augment import SimilarityRange, augment_batch
from tfface.data.synthetic import procedural_backgrounds
from tfface.errors import InputError
from tfface.morphable.model import landmarks5_from_68
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.render.rasterizer import interpolate, rasterize

if TYPE_CHECKING:
    from tfface.training.profiling import FaceProfiler, FitProfiler

#: Frontal camera rotation (DESIGN.md conventions): camera looks along +Z, image y down.
FRONTAL_R = np.diag([1.0, -1.0, -1.0]).astype(np.float32)


class PretrainingTargets(NamedTuple):
    """The fixed supervision maps, ``(H, W, 4)`` stacked as u, v, depth, confidence.

    Attributes:
        maps: ``(H, W, 4)`` float32 target u, v, depth and face-region confidence.
        K, R, t: the camera that places the mean shape (``(3, 3)``, ``(3, 3)``, ``(3,)``).
    """

    maps: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray


#: Camera-to-centroid distance (mm) of the template placement.
CAMERA_DISTANCE = 600.0


def aligning_camera(points: np.ndarray, targets: np.ndarray,
                    distance: float = CAMERA_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frontal pinhole camera that maps model ``points`` close to pixel ``targets``.

    The scale and image offset are the least-squares weak-perspective fit of the frontal
    projection ``(X, -Y)`` of ``points`` to ``targets``; the camera sits ``distance`` mm in front
    of the points' centroid with focal length ``scale * distance``.

    Args:
        points: ``(L, 3)`` model points (mm).
        targets: ``(L, 2)`` pixel positions.
        distance: camera-to-centroid distance (mm).

    Returns:
        ``(K, R, t)`` float32.
    """
    points = np.asarray(points, np.float64)
    targets = np.asarray(targets, np.float64)
    centroid = points.mean(0)
    flat = (points - centroid)[:, :2] * [1.0, -1.0]
    target_mean = targets.mean(0)
    scale = float(np.sum(flat * (targets - target_mean)) / np.sum(flat ** 2))
    if not scale > 0:
        raise InputError("cannot align the mean shape: landmark targets are mirrored or degenerate")
    focal = scale * distance
    K = np.array([[focal, 0, target_mean[0]], [0, focal, target_mean[1]], [0, 0, 1]])
    t = -FRONTAL_R @ centroid + [0.0, 0.0, distance]
    return K.astype(np.float32), FRONTAL_R.copy(), t.astype(np.float32)


def pretraining_targets(uv_model: UVMorphableModel, mean_landmarks5: np.ndarray, image_size: int,
                        depth: float = 1.0) -> PretrainingTargets:
    """Render the fixed pretraining maps of the mean shape (supplement F, Fig. 12).

    Args:
        uv_model: the UV-3DMM (its hole-filled mean shape and vertex UVs are rendered).
        mean_landmarks5: ``(5, 2)`` mean 5-landmark pixel position of the aligned images.
        image_size: square map size in pixels.
        depth: the constant target depth (network units).

    Returns:
        :class:`PretrainingTargets`.
    """
    model = uv_model.model
    landmarks5 = landmarks5_from_68(model.mean[model.landmarks68])
    K, R, t = aligning_camera(landmarks5, mean_landmarks5)
    fragments = rasterize(model.mean[None], model.triangles, K[None], R[None], t[None], image_size, image_size)
    uv = interpolate(uv_model.vertex_uv, model.triangles, fragments)[0].numpy()
    mask = fragments.mask[0].numpy()
    maps = np.concatenate([uv, (depth * mask)[..., None], mask[..., None]], axis=-1).astype(np.float32)
    return PretrainingTargets(maps, K, R, t)


def pretraining_dataset(images: tf.data.Dataset, targets: PretrainingTargets | None, batch_size: int,
                        ranges: SimilarityRange = SimilarityRange(), seed: int = 0,
                        confine: tuple[float, float] | None = None, no_face_fraction: float = 0.0,
                        profiler: FaceProfiler | FitProfiler | None = None,
                        max_turn: tuple[float, float] = (0.0, 0.0)) -> tf.data.Dataset:
    """Batches ``(augmented image, augmented target maps)`` for supervised pretraining.

    A share ``no_face_fraction`` of the examples is replaced by a face-free procedural texture
    (:func:`tfface.data.synthetic.procedural_backgrounds`) whose target confidence is zero
    everywhere, so the network learns to report no face rather than invent one.

    Args:
        images: dataset of ``(H, W, 3)`` float32 roughly aligned images (or dicts with "image"),
            or of dicts with "image" and "maps" ``(H, W, 4)``: photos labelled with their own
            targets (:mod:`tfface.training.self_labels`), which are then not given ``targets``;
            with a ``profiler``, also "fit", the fits they are turned on.
        targets: the fixed maps from :func:`pretraining_targets` (same H, W); None for labelled
            photos.
        batch_size: batch size.
        ranges: random similarity applied to image and maps alike.
        seed: stateless seed of the augmentation.
        confine: ``(radius, source_radius)`` of :func:`tfface.data.augment.confine_disc` (None:
            the similarities are not confined).
        no_face_fraction: probability in [0, 1] that an example is face-free.
        profiler: a :class:`tfface.training.profiling.FaceProfiler` (aligned photos) or
            :class:`tfface.training.profiling.FitProfiler` (labelled photos with their fits): when
            given, every example's face is first turned by a yaw and a pitch drawn uniformly within
            ``max_turn`` (radians), framed as the profiler says and supervised with the turned maps.
        max_turn: largest ``(|yaw|, |pitch|)`` of the profiled examples, radians.

    Returns:
        Dataset of ``((B, H, W, 3), (B, H, W, 4))`` repeated forever.
    """
    if not 0.0 <= no_face_fraction <= 1.0:
        raise InputError(f"no_face_fraction must lie in [0, 1], got {no_face_fraction}")
    labelled = isinstance(images.element_spec, dict) and "maps" in images.element_spec
    if labelled == (targets is not None):
        raise InputError("pretraining examples need either the fixed targets or their own maps")
    if labelled and profiler is not None and "fit" not in images.element_spec:
        raise InputError("self-labelled photos are turned on their own fits: give them with their fits")
    if not labelled:
        maps = tf.constant(targets.maps)
        images = images.map(lambda x: x["image"] if isinstance(x, dict) else x)

    def augment(step, example):
        if labelled:
            image, example_maps, fit = example["image"], example["maps"], example.get("fit") if profiler else None
        else:
            image, example_maps, fit = example, None, None
        step_seed = tf.stack([tf.cast(seed, tf.int64), step])
        count = tf.shape(image)[:1]
        framing = None
        turn = None
        if profiler is not None:
            turn = tf.random.stateless_uniform(tf.concat([count, [2]], 0), step_seed + 1, -1.0, 1.0) * max_turn
        if fit is not None:
            image, example_maps, framing = profiler(image, {**fit, "maps": example_maps}, turn[:, 0], turn[:, 1])
        elif example_maps is None and profiler is None:
            example_maps = tf.broadcast_to(maps, tf.concat([count, tf.shape(maps)], 0))
        elif example_maps is None:
            image, example_maps = profiler(image, turn[:, 0], turn[:, 1])
            framing = profiler.framing_transforms(turn[:, 0], turn[:, 1])
        batch = {"image": image, "correspondence": example_maps[..., 0:2], "depth": example_maps[..., 2],
                 "confidence": example_maps[..., 3]}
        out = augment_batch(batch, step_seed, ranges, confine=confine, before=framing)
        image, confidence = out["image"], out["confidence"]
        if no_face_fraction > 0:
            draw, texture = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
            size = image.shape[1] or tf.shape(image)[1]
            no_face = tf.random.stateless_uniform([tf.shape(image)[0], 1, 1], draw) < no_face_fraction
            image = tf.where(no_face[..., None], procedural_backgrounds(texture, tf.shape(image)[0], size), image)
            confidence = tf.where(no_face, 0.0, confidence)
        target = tf.concat([out["correspondence"], out["depth"][..., None], confidence[..., None]], -1)
        return image, target

    batched = images.repeat().batch(batch_size, drop_remainder=True)
    return batched.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
