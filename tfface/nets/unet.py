"""The pixel-wise prediction network: U-Net variants of supplement N.

The regular U-Net has four down-sampling and four up-sampling stages; every scale applies two
3x3 convolutions, each followed by batch normalisation and ReLU. Channel counts (supplement N)::

    down:  3 -> 64 -> 128 -> 256 -> 512 -> 512 (bottleneck)
    up:    (512+512) -> 256, (256+256) -> 128, (128+128) -> 64, (64+64) -> 64 -> 5

"narrow" halves and "wide" doubles every width except input and output; "deep" uses four
convolutions per scale instead of two. A free ``width`` multiplier scales the widths further
(for CPU training and tests).

The five output channels are (supplement H, DESIGN "Network"):

====  ======================  =========================================
 ch    meaning                 activation
====  ======================  =========================================
 0,1   correspondence u, v     sigmoid (UV space is the unit square)
 2     depth                   softplus + ``depth_offset`` (> 0)
 3     geometric confidence    sigmoid
 4     photometric confidence  sigmoid
====  ======================  =========================================
"""

from __future__ import annotations

import keras
from keras import layers

from tfface.errors import InputError

#: Widths of the regular U-Net's encoder scales (the bottleneck repeats the last one).
REGULAR_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)

#: Named variants of supplement N: (width multiplier, convolutions per scale).
VARIANTS: dict[str, tuple[float, int]] = {
    "narrow": (0.5, 2),
    "regular": (1.0, 2),
    "wide": (2.0, 2),
    "deep": (1.0, 4),
}

#: Number of output channels (u, v, depth, geometric and photometric confidence).
NUM_OUTPUTS = 5


@keras.saving.register_keras_serializable(package="tfface")
class PredictionHead(layers.Layer):
    """Activations of the five output channels: sigmoid u, v; softplus depth; sigmoid confidences.

    Args:
        depth_offset: added to the softplus depth so that depth stays strictly positive.

    Input ``(B, H, W, 5)`` raw activations; output ``(B, H, W, 5)`` in the table above.
    """

    def __init__(self, depth_offset: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.depth_offset = float(depth_offset)

    def call(self, x):
        uv = keras.ops.sigmoid(x[..., 0:2])
        depth = keras.ops.softplus(x[..., 2:3]) + self.depth_offset
        confidence = keras.ops.sigmoid(x[..., 3:5])
        return keras.ops.concatenate([uv, depth, confidence], axis=-1)

    def get_config(self):
        return {**super().get_config(), "depth_offset": self.depth_offset}


def _conv_block(x, filters: int, convs: int, name: str, dtype, synchronized: bool):
    """``convs`` x (3x3 conv, batch norm, ReLU)."""
    for i in range(convs):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}", dtype=dtype)(x)
        x = layers.BatchNormalization(synchronized=synchronized, name=f"{name}_bn{i}", dtype=dtype)(x)
        x = layers.ReLU(name=f"{name}_relu{i}", dtype=dtype)(x)
    return x


def scaled_widths(width: float) -> tuple[int, ...]:
    """Encoder widths of a U-Net with multiplier ``width`` (at least 2 channels each)."""
    return tuple(max(2, int(round(w * width))) for w in REGULAR_WIDTHS)


def build_unet(
    image_size: int | tuple[int, int] = 224,
    variant: str = "regular",
    width: float = 1.0,
    convs_per_scale: int | None = None,
    depth_offset: float = 0.1,
    dtype: str | None = None,
    synchronized_batchnorm: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Build a U-Net of supplement N.

    Args:
        image_size: input height and width in pixels (an int for square images); each must be a
            multiple of 16 (four 2x down-samplings).
        variant: "narrow", "regular", "wide" or "deep".
        width: extra multiplier on every width (e.g. 0.25 for a CPU model).
        convs_per_scale: overrides the variant's number of convolutions per scale.
        depth_offset: see :class:`PredictionHead`.
        dtype: dtype policy of the hidden layers, e.g. ``"mixed_bfloat16"``; the output layers
            are always float32.
        synchronized_batchnorm: batch statistics over all replicas of a ``tf.distribute``
            strategy, so that a distributed step equals one step on the global batch.
        name: model name (default ``unet_<variant>``).

    Returns:
        A functional ``keras.Model`` mapping ``(B, H, W, 3)`` preprocessed images to
        ``(B, H, W, 5)`` predictions (see the module docstring).
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown U-Net variant {variant!r}; expected one of {sorted(VARIANTS)}")
    height, width_px = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height % 16 or width_px % 16 or height <= 0 or width_px <= 0:
        raise InputError(f"U-Net input size must be positive multiples of 16, got {height}x{width_px}")
    if not width > 0:
        raise InputError(f"width multiplier must be positive, got {width}")
    variant_width, variant_convs = VARIANTS[variant]
    convs = int(convs_per_scale or variant_convs)
    widths = scaled_widths(variant_width * width)

    inputs = keras.Input((height, width_px, 3), name="image")
    x = inputs
    skips = []
    for level, filters in enumerate(widths):
        x = _conv_block(x, filters, convs, f"down{level}", dtype, synchronized_batchnorm)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}", dtype=dtype)(x)
    x = _conv_block(x, widths[-1], convs, "bottleneck", dtype, synchronized_batchnorm)
    up_widths = widths[:-1][::-1] + (widths[0],)  # 256, 128, 64, 64 for the regular net
    for level, (skip, filters) in enumerate(zip(skips[::-1], up_widths)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"upsample{level}", dtype=dtype)(x)
        x = layers.Concatenate(name=f"skip{level}", dtype=dtype)([x, skip])
        x = _conv_block(x, filters, convs, f"up{level}", dtype, synchronized_batchnorm)
    x = layers.Conv2D(NUM_OUTPUTS, 1, name="logits", dtype="float32")(x)
    outputs = PredictionHead(depth_offset, name="prediction", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name or f"unet_{variant}")
