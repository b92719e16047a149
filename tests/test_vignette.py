"""The input vignette: the network sees nothing outside its disc, all of the inside."""

import numpy as np
import tensorflow as tf

from tfface.layers.vignette import FEATHER, OUTSIDE, apply_vignette, vignette_mask
from tfface.training.config import CONFIGS


def test_vignette_mask_is_one_inside_zero_outside_and_rotation_symmetric():
    mask = vignette_mask(40, 0.3)[..., 0]
    centres = (np.arange(40) + 0.5) / 40 - 0.5
    distance = np.hypot(*np.meshgrid(centres, centres))
    assert np.all(mask[distance <= 0.3] == 1.0) and np.all(mask[distance >= 0.3 + FEATHER] == 0.0)
    np.testing.assert_array_equal(mask, mask.T)
    np.testing.assert_array_equal(mask, np.rot90(mask))
    images = tf.ones([1, 40, 40, 3])
    np.testing.assert_allclose(apply_vignette(images, vignette_mask(40, 0.3))[0, 0, 0], [OUTSIDE] * 3)


def test_network_with_a_vignette_ignores_the_corners_and_sees_the_disc(default_uv_model):
    from tfface.training.loop import build_model

    config = CONFIGS["tiny"].replace(input_vignette=0.3)
    model = build_model(default_uv_model, config)
    size = config.image_size
    images = np.random.default_rng(0).uniform(size=(1, size, size, 3)).astype(np.float32)
    corners = images.copy()
    corners[:, :3, :3] = 1.0 - corners[:, :3, :3]
    centre = images.copy()
    centre[:, size // 2, size // 2] = 1.0 - centre[:, size // 2, size // 2]
    maps = model.predict_maps(images).numpy()
    np.testing.assert_array_equal(model.predict_maps(corners).numpy(), maps)
    assert np.abs(model.predict_maps(centre).numpy() - maps).max() > 1e-6
    unmasked = build_model(default_uv_model, CONFIGS["tiny"])
    assert np.abs(unmasked.predict_maps(corners).numpy() - unmasked.predict_maps(images).numpy()).max() > 1e-6
