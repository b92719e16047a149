"""Random 2D similarity augmentation with background fill (supplement F and K).

Every image of a batch is rotated, scaled and translated about the image centre by its own random
similarity; pixels the transformed image does not cover are filled with another image of the batch
(the supplement fills them with random other images). The same transform is applied to any target
maps (nearest-neighbour for correspondence / mask / depth, bilinear for images), to landmark
coordinates and, when present, to the camera (so synthetic ground truth stays consistent).

All transforms are ``(B, 3, 3)`` forward matrices ``A`` acting on continuous pixel coordinates
(x right, y down, pixel centres at +0.5): a point ``p`` of the input lands at ``A p`` in the output.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from tfface.errors import InputError

#: Interpolation used for each known target map (anything else: bilinear).
NEAREST_KEYS = ("correspondence", "mask", "depth", "confidence")
#: Keys holding ``(B, P, 2)`` pixel coordinates.
POINT_KEYS = ("landmarks68", "landmarks5")


@dataclasses.dataclass(frozen=True)
class SimilarityRange:
    """Ranges of the random similarity (uniform in each; scale log-uniform).

    Attributes:
        rotation: ``(low, high)`` in radians; ``(-pi, pi)`` is any in-plane rotation.
        scale: ``(low, high)`` scale factors.
        translation: maximum shift as a fraction of the image size (per axis).
    """

    rotation: tuple[float, float] = (-math.pi, math.pi)
    scale: tuple[float, float] = (0.8, 1.25)
    translation: float = 0.1

    def __post_init__(self) -> None:
        if not (self.scale[0] > 0 and self.scale[1] >= self.scale[0]):
            raise InputError(f"scale range must satisfy 0 < low <= high, got {self.scale}")
        if self.rotation[1] < self.rotation[0] or self.translation < 0:
            raise InputError(f"bad rotation {self.rotation} or translation {self.translation}")

    @classmethod
    def symmetric(cls, degrees: float, scale: tuple[float, float], translation: float) -> "SimilarityRange":
        """Rotations within ``+-degrees`` (the configurations' unit), the given scale range and shift."""
        rotation = math.radians(degrees)
        return cls((-rotation, rotation), tuple(scale), translation)


def similarity_matrices(rotation: tf.Tensor, scale: tf.Tensor, translation: tf.Tensor, height: int,
                        width: int) -> tf.Tensor:
    """Forward similarity matrices about the image centre.

    Args:
        rotation: ``(B,)`` angles in radians (positive turns clockwise on screen, as y points down).
        scale: ``(B,)`` scale factors.
        translation: ``(B, 2)`` shifts in pixels.
        height, width: image size.

    Returns:
        ``(B, 3, 3)`` float32 matrices ``A`` with ``A p = s Rot (p - c) + c + translation``.
    """
    rotation, scale = tf.cast(rotation, tf.float32), tf.cast(scale, tf.float32)
    translation = tf.cast(translation, tf.float32)
    centre = tf.constant([width / 2.0, height / 2.0], tf.float32)
    cos, sin = tf.cos(rotation) * scale, tf.sin(rotation) * scale
    linear = tf.reshape(tf.stack([cos, -sin, sin, cos], axis=-1), [-1, 2, 2])
    offset = centre + translation - tf.linalg.matvec(linear, tf.broadcast_to(centre, tf.shape(translation)))
    top = tf.concat([linear, offset[..., None]], axis=-1)
    bottom = tf.broadcast_to(tf.constant([[0.0, 0.0, 1.0]]), [tf.shape(top)[0], 1, 3])
    return tf.concat([top, bottom], axis=-2)


def random_similarity(seed: tf.Tensor, batch_size: int | tf.Tensor, height: int, width: int,
                      ranges: SimilarityRange = SimilarityRange()) -> tf.Tensor:
    """``(B, 3, 3)`` random similarities from a stateless ``seed`` (shape ``(2,)`` int)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    rotation = tf.random.stateless_uniform([batch_size], seeds[0], *ranges.rotation)
    log_scale = tf.random.stateless_uniform([batch_size], seeds[1], math.log(ranges.scale[0]),
                                            math.log(ranges.scale[1]))
    shift = tf.random.stateless_uniform([batch_size, 2], seeds[2], -ranges.translation, ranges.translation)
    return similarity_matrices(rotation, tf.exp(log_scale), shift * [width, height], height, width)


def confine_disc(transforms: tf.Tensor, radius: float | tf.Tensor, source_radius: float | tf.Tensor, height: int,
                 width: int) -> tf.Tensor:
    """Pull forward similarities in so that the output's centred disc samples only the input's.

    The output disc of ``radius`` about the centre ``c`` comes from the input disc of radius
    ``radius / sigma`` about ``q = A^-1 c`` (``sigma``: the similarity's scale). Each transform is
    zoomed about ``c`` by the least factor ``>= 1`` that makes that disc no larger than the
    input's centred disc of ``source_radius`` (which keeps ``q``), then its translation is changed
    so that ``q`` moves straight towards ``c`` just as far as the disc needs to fit inside. A
    transform whose disc already fits is unchanged. The input disc is taken half a pixel smaller
    than ``source_radius``, so that bilinear sampling inside it reads only input pixels within
    ``source_radius``: with ``source_radius`` the part of the input that shows the photo, no seam
    of the background fill enters the output disc.

    Args:
        transforms: ``(B, 3, 3)`` forward similarities (pixel coordinates).
        radius: output disc radius, a fraction of the shorter side.
        source_radius: scalar or ``(B,)`` input disc radii, fractions of the shorter side.
        height, width: image size (input and output alike).

    Returns:
        ``(B, 3, 3)`` float32 confined similarities.
    """
    transforms = tf.cast(transforms, tf.float32)
    side = float(min(height, width))
    centre = tf.constant([width / 2.0, height / 2.0], tf.float32)
    radius = tf.cast(radius, tf.float32) * side
    source = tf.broadcast_to(tf.cast(source_radius, tf.float32) * side - 0.5, tf.shape(transforms)[:1])
    linear, offset = transforms[:, :2, :2], transforms[:, :2, 2]
    away = tf.linalg.solve(linear, (centre - offset)[..., None])[..., 0] - centre  # q - c
    scale = tf.sqrt(tf.abs(tf.linalg.det(linear)))
    zoom = tf.maximum(1.0, radius / (scale * source))
    linear = linear * zoom[:, None, None]
    reach = tf.maximum(source - radius / (scale * zoom), 0.0)
    distance = tf.norm(away, axis=-1)
    kept = centre + away * tf.minimum(1.0, reach / tf.maximum(distance, 1e-9))[:, None]
    offset = centre - tf.linalg.matvec(linear, kept)
    top = tf.concat([linear, offset[..., None]], axis=-1)
    return tf.concat([top, transforms[:, 2:]], axis=-2)


def warp_images(images: tf.Tensor, transforms: tf.Tensor, interpolation: str = "BILINEAR",
                fill_value: float = 0.0) -> tf.Tensor:
    """Apply forward transforms to ``(B, H, W, C)`` images with ``ImageProjectiveTransformV3``.

    Args:
        images: ``(B, H, W, C)`` float32.
        transforms: ``(B, 3, 3)`` forward matrices in continuous pixel coordinates.
        interpolation: ``"BILINEAR"`` or ``"NEAREST"``.
        fill_value: value of output pixels that map outside the input.

    Returns:
        ``(B, H, W, C)`` warped images.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank != 4:
        raise InputError(f"images must be (B, H, W, C), got {images.shape}")
    # The op maps output *index* coordinates to input index coordinates; ours are centred at +0.5.
    shift = tf.constant([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unshift = tf.constant([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    inverse = unshift @ tf.linalg.inv(tf.cast(transforms, tf.float32)) @ shift
    inverse = inverse / inverse[:, 2:3, 2:3]
    flat = tf.reshape(inverse, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=tf.shape(images)[1:3],
        fill_value=tf.constant(fill_value, tf.float32), interpolation=interpolation, fill_mode="CONSTANT")


def coverage(transforms: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """``(B, H, W)`` share of each output pixel that bilinear :func:`warp_images` takes from inside
    the input image (what warping an all-ones image gives), computed in closed form.

    An output centre ``p`` samples the input at ``q = A^-1 p``; along x, bilinear interpolation
    at index coordinate ``u = q_x - 0.5`` gives weight ``clip(min(u + 1, W - u), 0, 1)`` to
    existing pixels (likewise along y), so the coverage is the product of the two.
    """
    inverse = tf.linalg.inv(tf.cast(transforms, tf.float32))
    cols = tf.cast(tf.range(width), tf.float32) + 0.5
    rows = tf.cast(tf.range(height), tf.float32) + 0.5
    u = inverse[:, None, None, 0, 0] * cols[None, None, :] + inverse[:, None, None, 0, 1] * rows[None, :, None] \
        + inverse[:, None, None, 0, 2] - 0.5
    v = inverse[:, None, None, 1, 0] * cols[None, None, :] + inverse[:, None, None, 1, 1] * rows[None, :, None] \
        + inverse[:, None, None, 1, 2] - 0.5
    along_x = tf.clip_by_value(tf.minimum(u + 1.0, width - u), 0.0, 1.0)
    along_y = tf.clip_by_value(tf.minimum(v + 1.0, height - v), 0.0, 1.0)
    return along_x * along_y


def transform_points(points: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Map ``(B, P, 2)`` pixel coordinates through ``(B, 3, 3)`` forward similarities."""
    points = tf.convert_to_tensor(points, tf.float32)
    return tf.linalg.matmul(points, transforms[:, :2, :2], transpose_b=True) + transforms[:, None, :2, 2]


def transform_camera(K: tf.Tensor, R: tf.Tensor, t: tf.Tensor,
                     transforms: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The camera that sees the transformed image: ``A K [R | t] = K' [R' | t']``.

    ``A K`` is split by a 2x2 RQ decomposition of its upper-left block into an upper-triangular
    ``K'`` (positive focal lengths) and an in-plane rotation ``Q`` folded into ``R' = Q R``,
    ``t' = Q t``. Depth ``Z`` is unchanged, so depth maps stay valid.

    Args:
        K, R: ``(B, 3, 3)``; t: ``(B, 3)``; transforms: ``(B, 3, 3)`` similarities.

    Returns:
        ``(K', R', t')`` with the same shapes.
    """
    product = transforms @ K
    m1, m2 = product[:, 0, :2], product[:, 1, :2]
    u22 = tf.norm(m2, axis=-1)
    q2 = m2 / u22[:, None]
    q1 = tf.stack([q2[:, 1], -q2[:, 0]], axis=-1)
    u12 = tf.reduce_sum(m1 * q2, axis=-1)
    u11 = tf.reduce_sum(m1 * q1, axis=-1)
    zero, one = tf.zeros_like(u11), tf.ones_like(u11)
    new_K = tf.stack([tf.stack([u11, u12, product[:, 0, 2]], -1),
                      tf.stack([zero, u22, product[:, 1, 2]], -1),
                      tf.stack([zero, zero, one], -1)], axis=-2)
    rotation = tf.stack([tf.concat([q1, zero[:, None]], -1), tf.concat([q2, zero[:, None]], -1),
                         tf.stack([zero, zero, one], -1)], axis=-2)
    return new_K, rotation @ R, tf.linalg.matvec(rotation, t)


def _image_size(image: tf.Tensor, rank: int, what: str) -> tuple[int, int]:
    if image.shape.rank != rank:
        raise InputError(f"{what} needs image of rank {rank}, got shape {image.shape}")
    height, width = image.shape[-3], image.shape[-2]
    if height is None or width is None:
        raise InputError(f"{what} needs a static image size; resize images first")
    return height, width


def transform_batch(batch: dict, transforms: tf.Tensor) -> dict:
    """Apply given forward similarities to a batch dict (no background fill).

    Args:
        batch: dict with ``"image"`` ``(B, H, W, 3)`` and optionally target maps ``(B, H, W[, C])``
            (keys in :data:`NEAREST_KEYS` use nearest-neighbour, other float maps bilinear),
            landmark coordinates (:data:`POINT_KEYS`, ``(B, P, 2)``) and a camera ``"K"``, ``"R"``,
            ``"t"``. Other entries pass through unchanged.
        transforms: ``(B, 3, 3)`` forward similarities.

    Returns:
        A new dict with the same keys, plus ``"similarity"`` (the transforms) and ``"valid"``
        ``(B, H, W)`` float32 (1 where the output pixel comes from the input image). Uncovered
        image pixels are 0.
    """
    image = tf.convert_to_tensor(batch["image"], tf.float32)
    height, width = _image_size(image, 4, "transform_batch")
    out = dict(batch)
    out["similarity"] = transforms
    out["image"] = warp_images(image, transforms)
    out["valid"] = tf.cast(coverage(transforms, height, width) > 0.5, tf.float32)
    for key, value in batch.items():
        if key == "image" or key in POINT_KEYS or key in ("K", "R", "t"):
            continue
        value = tf.convert_to_tensor(value)
        if value.shape.rank in (3, 4) and value.shape[1] == height and value.shape[2] == width:
            maps = tf.cast(value, tf.float32)
            maps = maps[..., None] if value.shape.rank == 3 else maps
            mode = "NEAREST" if key in NEAREST_KEYS else "BILINEAR"
            maps = warp_images(maps, transforms, mode)
            out[key] = tf.cast(maps[..., 0] if value.shape.rank == 3 else maps, value.dtype)
    for key in POINT_KEYS:
        if key in batch:
            out[key] = transform_points(batch[key], transforms)
    if all(key in batch for key in ("K", "R", "t")):
        out["K"], out["R"], out["t"] = transform_camera(batch["K"], batch["R"], batch["t"], transforms)
    return out


def fill_background(batch: dict, backgrounds: tf.Tensor) -> dict:
    """Fill the pixels a transformed batch (:func:`transform_batch`) does not cover with
    ``backgrounds`` ``(B, H, W, 3)``, alpha-blended by the closed-form :func:`coverage` of its
    ``"similarity"`` (so partially covered edge pixels blend smoothly)."""
    image = batch["image"]
    height, width = _image_size(image, 4, "fill_background")
    cover = coverage(batch["similarity"], height, width)[..., None]
    return {**batch, "image": image + (1.0 - cover) * tf.cast(backgrounds, image.dtype)}


def augment_batch(batch: dict, seed: tf.Tensor, ranges: SimilarityRange = SimilarityRange(),
                  fill: bool = True, confine: tuple[float, float] | None = None,
                  before: tf.Tensor | None = None) -> dict:
    """Random similarity augmentation of a batch dict: :func:`transform_batch` with random
    transforms from the stateless ``(2,)`` ``seed``, then (if ``fill``) :func:`fill_background`
    with the previous image of the batch (rolled by one; a shuffled source pairs random images).
    ``before``, ``(B, 3, 3)`` forward transforms, is applied first, in the same warp. With
    ``confine = (radius, source_radius)`` the transforms first go through :func:`confine_disc`,
    so the output's centred disc shows only the input's."""
    image = tf.convert_to_tensor(batch["image"], tf.float32)
    height, width = _image_size(image, 4, "augment_batch")
    transforms = random_similarity(seed, tf.shape(image)[0], height, width, ranges)
    if before is not None:
        transforms = transforms @ tf.cast(before, tf.float32)
    if confine is not None:
        transforms = confine_disc(transforms, *confine, height, width)
    out = transform_batch(batch, transforms)
    return fill_background(out, tf.roll(image, 1, axis=0)) if fill else out


def augment_dataset(dataset: tf.data.Dataset, batch_size: int, seed: int = 0,
                    ranges: SimilarityRange = SimilarityRange(), fill: bool = True,
                    drop_remainder: bool = True) -> tf.data.Dataset:
    """Augment an *unbatched* dict dataset and batch it.

    Example ``n`` is transformed by the similarity of stateless seed ``(seed, n)`` in a parallel
    per-example map (which keeps both cores busy better than one large batched warp), then the
    batch is formed and its uncovered pixels filled (if ``fill``) with the previous example's
    untransformed image, as :func:`augment_batch` does. Reproducible for a fixed input order.

    Returns:
        A dataset of batched dicts as from :func:`augment_batch`.
    """
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")

    def transform(index, example):
        image = tf.convert_to_tensor(example["image"], tf.float32)
        height, width = _image_size(image, 3, "augment_dataset")
        transforms = random_similarity(tf.stack([tf.cast(seed, tf.int64), index]), 1, height, width, ranges)
        one = transform_batch(tf.nest.map_structure(lambda v: tf.convert_to_tensor(v)[None], example), transforms)
        return tf.nest.map_structure(lambda v: v[0], one), image

    def fill_from_previous(batch, originals):
        return fill_background(batch, tf.roll(originals, 1, axis=0))

    batches = dataset.enumerate().map(transform, num_parallel_calls=tf.data.AUTOTUNE).batch(
        batch_size, drop_remainder=drop_remainder)
    if fill:
        return batches.map(fill_from_previous, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.map(lambda batch, originals: batch)
