"""The flip test: predict the maps of an image and of its mirror image, and fuse them before one fit.

A network's error is not mirror-symmetric: on a mirrored face it errs differently. The maps of the
mirror image, flipped back and with every correspondence sent to its mirror partner in UV space
(:func:`mirror_maps`), are a second estimate of the image's maps; :func:`fuse_maps` averages the
two, weighted by their geometric confidences, and the 3DMM is fitted once to the result. Fitting
the fused maps of a mirrored image gives the mirror image of the fit (up to the UV interpolation).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

#: ``uv (B, P, 2) -> (mirror uv (B, P, 2), valid (B, P) float32)``: the mirror partner of every
#: correspondence (:meth:`tfface.layers.uv_sampling.UVSampling.interpolate` of the partners' UVs).
MirrorCorrespondence = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def mirror_maps(maps: tf.Tensor, mirror_correspondence: MirrorCorrespondence) -> tf.Tensor:
    """The maps of a mirror image, as maps of the image itself.

    Args:
        maps: ``(B, H, W, 5)`` u, v, depth, geometric and photometric confidence predicted for the
            horizontally mirrored image.
        mirror_correspondence: maps a correspondence to its mirror partner's.

    Returns:
        ``(B, H, W, 5)``: flipped back horizontally, each correspondence replaced by its partner's;
        confidence 0 where the correspondence lies outside the mesh.
    """
    flipped = tf.reverse(maps, axis=[2])
    # Static height and width where known keep the pixel count static (the TFLite converter needs it).
    height, width = (maps.shape[i] if maps.shape[i] is not None else tf.shape(maps)[i] for i in (1, 2))
    uv, valid = mirror_correspondence(tf.reshape(flipped[..., 0:2], [-1, height * width, 2]))
    uv = tf.reshape(uv, [-1, height, width, 2])
    valid = tf.reshape(valid, [-1, height, width, 1])
    return tf.concat([uv, flipped[..., 2:3], flipped[..., 3:5] * valid], axis=-1)


def fuse_maps(maps: tf.Tensor, mirrored: tf.Tensor, epsilon: float = 1e-6) -> tf.Tensor:
    """Average two estimates of the same maps ``(B, H, W, 5)``.

    Correspondence and depth are averaged with the geometric confidences as weights (where both
    are 0, the plain mean); both confidences are the plain mean. The result is symmetric in its
    two arguments.
    """
    weight, weight_mirrored = maps[..., 3:4] + epsilon, mirrored[..., 3:4] + epsilon
    geometry = (weight * maps[..., 0:3] + weight_mirrored * mirrored[..., 0:3]) / (weight + weight_mirrored)
    return tf.concat([geometry, 0.5 * (maps[..., 3:5] + mirrored[..., 3:5])], axis=-1)
