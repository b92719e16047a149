"""A fixed disc through which the network sees its input (train and inference alike).

The training photos are warped by random similarities, and the pixels a warp does not cover are
filled from another photo: the seam between the two is a straight edge that turns, moves and
scales with the face. A network can read the face's placement off that seam instead of off the
face, and then, on a real photograph (no seam), it places one canonical face whatever it sees
(BUILD.md, "the seam shortcut"). Outside a centred disc, which the random similarities turn into
itself, every input is replaced by a constant grey, so the seams outside it carry nothing.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Width (fraction of the side) over which the disc's edge blends into the grey.
FEATHER = 0.04

#: Value of the pixels outside the disc (after the softplus preprocessing: mid grey).
OUTSIDE = 0.5


def vignette_mask(size: int, radius: float, feather: float = FEATHER) -> np.ndarray:
    """``(size, size, 1)`` float32 weights of each pixel: 1 within ``radius`` (a fraction of the
    side) of the image centre, 0 beyond ``radius + feather``, linear in between."""
    centres = (np.arange(size) + 0.5) / size - 0.5
    distance = np.hypot(*np.meshgrid(centres, centres))
    return np.clip((radius + feather - distance) / feather, 0.0, 1.0)[..., None].astype(np.float32)


def apply_vignette(images: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``(B, H, W, C)`` images seen through ``mask`` ``(H, W, 1)`` (:func:`vignette_mask`), the
    rest set to :data:`OUTSIDE`."""
    mask = tf.cast(mask, images.dtype)
    return images * mask + (1.0 - mask) * OUTSIDE
