"""U-Net variants of supplement N: widths, depth, output activations, serialisation."""

import numpy as np
import pytest
import keras

from tfface.errors import InputError
from tfface.nets.unet import PredictionHead, build_unet, scaled_widths


def _conv_widths(model):
    return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_regular_unet_has_the_channel_counts_of_supplement_n():
    model = build_unet(32, "regular")
    widths = _conv_widths(model)
    # two convs per scale: down 64,128,256,512, bottleneck 512, up 256,128,64,64, then 5 outputs
    assert widths == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512,
                      256, 256, 128, 128, 64, 64, 64, 64, 5]
    concat_inputs = [layer.input[0].shape[-1] + layer.input[1].shape[-1]
                     for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert concat_inputs == [1024, 512, 256, 128]


@pytest.mark.parametrize("variant, factor, convs", [("narrow", 0.5, 2), ("wide", 2.0, 2), ("deep", 1.0, 4)])
def test_variants_scale_width_or_depth(variant, factor, convs):
    regular = _conv_widths(build_unet(16, "regular", width=1 / 8))
    other = _conv_widths(build_unet(16, variant, width=1 / 8))
    assert other[-1] == regular[-1] == 5  # output channels are fixed
    expected = [w for w in regular[:-1][::2] for _ in range(convs)]
    assert other[:-1] == [max(2, round(w * factor)) for w in expected]


def test_outputs_have_their_ranges_and_shape():
    model = build_unet((32, 48), width=1 / 16, depth_offset=0.25)
    x = np.random.default_rng(0).uniform(size=(2, 32, 48, 3)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 32, 48, 5)
    assert np.all((y[..., [0, 1, 3, 4]] > 0) & (y[..., [0, 1, 3, 4]] < 1))
    assert np.all(y[..., 2] > 0.25)


def test_prediction_head_activations_exact():
    raw = np.array([[[[0.0, 2.0, 0.0, -3.0, 1.0]]]], np.float32)
    out = np.asarray(PredictionHead(depth_offset=0.5)(raw))[0, 0, 0]
    sig = lambda z: 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(out, [0.5, sig(2.0), np.log(2.0) + 0.5, sig(-3.0), sig(1.0)], rtol=1e-6)


def test_unet_round_trips_through_keras_saving(tmp_path):
    model = build_unet(16, "narrow", width=1 / 8)
    x = np.random.default_rng(1).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"image_size": 30}, {"variant": "huge"}, {"width": 0.0}])
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError):
        build_unet(**{"image_size": 32, **kwargs})


def test_scaled_widths_never_below_two_channels():
    assert scaled_widths(1e-3) == (2, 2, 2, 2)
    assert scaled_widths(0.25) == (16, 32, 64, 128)
