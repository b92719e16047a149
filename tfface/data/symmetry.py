"""Mirror symmetry of aligned face photos: a landmark-free measure of how frontal a face is.

Face profiling (:mod:`tfface.training.profiling`) turns each aligned pretraining photo by a known
yaw and supervises it with the turned mean shape, as if the photo's own face were frontal. CelebA's
faces are not all frontal: a face already turned by ``y`` and profiled by ``u`` shows about
``y + u`` while its target says ``u``, which teaches the network to under-read a real turn.
Keeping the most frontal photos shrinks that error without any landmark.

A frontal face in the canonical framing is close to its own mirror image about the crop's vertical
centre line; a turned one is not (the near side wider, the far side foreshortened, the nose
pointing away). :func:`mirror_symmetry` correlates a high-passed grey image with its mirror image
inside the face's ellipse, allowing a few pixels of horizontal offset for a face a little off
centre. The high-pass removes the shading gradient of a side light, which is not a turn.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfface.errors import InputError

__all__ = ["most_frontal", "mirror_symmetry"]

#: Semi-axes (fraction of the side) of the centred ellipse the score looks at: the canonical
#: framing's face, without its outline (the background beyond the cheeks is not the face).
FACE_ELLIPSE = (0.32, 0.40)


def _gaussian_blur(grey: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` images (edges extended by reflection)."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    padded = tf.pad(grey[..., None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.nn.conv2d(padded, tf.reshape(taps, [1, -1, 1, 1]), 1, "VALID")
    return tf.nn.conv2d(rows, tf.reshape(taps, [-1, 1, 1, 1]), 1, "VALID")[..., 0]


def mirror_symmetry(images: tf.Tensor, max_shift: int = 6, sigma: float = 4.0) -> tf.Tensor:
    """How much each face crop looks like its own mirror image.

    Args:
        images: ``(B, S, S, 3)`` float images (any range) in the canonical framing; ``S`` at least
            ``6 * sigma + 1`` pixels.
        max_shift: largest horizontal offset (pixels) of the mirror axis from the centre line
            tried (in steps of one pixel: the axis moves half a pixel per pixel of shift).
        sigma: Gaussian (pixels) whose blur is subtracted (the high-pass).

    Returns:
        ``(B,)`` float32 in [-1, 1]: the best correlation over the offsets of the high-passed grey
        image with its mirror image inside :data:`FACE_ELLIPSE`; 1 for a mirror-symmetric image,
        about 0 for unrelated halves, 0 for a flat one.

    Raises:
        InputError: if ``images`` is not ``(B, S, S, 3)`` with ``S`` large enough.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    side = images.shape[1]
    if images.shape.rank != 4 or images.shape[-1] != 3 or side is None or images.shape[2] != side:
        raise InputError(f"mirror_symmetry needs (B, S, S, 3) images, got {images.shape}")
    if side < 6 * sigma + 1 or max_shift < 0:
        raise InputError(f"mirror_symmetry needs S >= 6 sigma + 1 and max_shift >= 0, got S={side}, "
                         f"sigma={sigma}, max_shift={max_shift}")
    grey = tf.reduce_mean(images, axis=-1)
    detail = grey - _gaussian_blur(grey, sigma)
    centre = np.arange(side) - side / 2 + 0.5
    inside = (centre[None, :] / (FACE_ELLIPSE[0] * side)) ** 2 + (centre[:, None] / (FACE_ELLIPSE[1] * side)) ** 2 < 1
    inside = tf.constant(inside.astype(np.float32))
    count = tf.reduce_sum(inside)

    def centred(values: tf.Tensor) -> tf.Tensor:
        mean = tf.reduce_sum(values * inside, axis=[1, 2], keepdims=True) / count
        return (values - mean) * inside

    own = centred(detail)
    own_norm = tf.sqrt(tf.reduce_sum(own**2, axis=[1, 2]))
    mirrored = detail[:, :, ::-1]
    scores = []
    for shift in range(-max_shift, max_shift + 1):
        other = centred(tf.roll(mirrored, shift, axis=2))
        norm = own_norm * tf.sqrt(tf.reduce_sum(other**2, axis=[1, 2]))
        scores.append(tf.math.divide_no_nan(tf.reduce_sum(own * other, axis=[1, 2]), norm))
    return tf.reduce_max(tf.stack(scores, axis=-1), axis=-1)


def most_frontal(images: tf.data.Dataset, share: float, batch_size: int = 256) -> tf.data.Dataset:
    """The ``share`` most mirror-symmetric images (:func:`mirror_symmetry`) of a finite dataset.

    One pass scores every image; the result is the dataset filtered by the scores' ``1 - share``
    quantile, so it yields the same images whenever ``images`` yields the same set each pass (a
    random subset drawn afresh each pass keeps about ``share`` of it).

    Args:
        images: finite dataset of ``(S, S, 3)`` float face crops in the canonical framing, or of
            dicts with such an ``"image"``.
        share: fraction in (0, 1] kept.
        batch_size: images scored per call in the scoring pass.

    Returns:
        ``images`` filtered (elements unchanged).

    Raises:
        InputError: if ``share`` is not in (0, 1] or ``images`` is empty.
    """
    if not 0.0 < share <= 1.0:
        raise InputError(f"the share of frontal photos kept must lie in (0, 1], got {share}")
    if share == 1.0:
        return images
    image_of = lambda element: element["image"] if isinstance(element, dict) else element  # noqa: E731
    scores = [mirror_symmetry(batch).numpy() for batch in images.map(image_of).batch(batch_size)]
    if not scores:
        raise InputError("most_frontal needs at least one image")
    threshold = float(np.quantile(np.concatenate(scores), 1.0 - share))
    return images.filter(lambda element: mirror_symmetry(image_of(element)[None])[0] >= threshold)
