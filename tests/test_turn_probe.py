"""tools/turn_probe.py: the fit of a profiled photo's exact maps turns the head as far as the
profiler turned it, and the probe's swaps take each channel from where they say."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import tensorflow as tf

from tfface.model import FaceModel
from tfface.paths import REPO_ROOT
from tfface.training.config import CONFIGS

spec = importlib.util.spec_from_file_location("turn_probe", REPO_ROOT / "tools" / "turn_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

SIZE = 64


def test_agreement_gives_the_slope_and_correlation_of_a_model_that_turns_half_way():
    truth = np.array([-60.0, -20.0, 0.0, 30.0, 70.0])
    row = probe.yaw_agreement(0.5 * truth + 1.0, truth)
    assert row["slope"] == pytest.approx(0.5) and row["correlation"] == pytest.approx(1.0)
    assert row["fitted_sd"] == pytest.approx(0.5 * row["truth_sd"])
    assert np.isnan(probe.yaw_agreement([3.0], [10.0])["slope"])


def test_swaps_take_each_channel_from_the_maps_they_name():
    network, exact = tf.zeros([1, 2, 2, 5]), tf.ones([1, 2, 2, 5])
    for name, swap in probe.SWAPS.items():
        maps = probe.swapped(network, exact, *swap).numpy()[0, 0, 0]
        expected = np.repeat(np.array(swap, np.float32), [2, 1, 2])
        np.testing.assert_array_equal(maps, expected, err_msg=name)


def test_the_exact_maps_of_a_profiled_photo_fit_the_applied_yaw(default_uv_model):
    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE, inference_flip_test=False))
    model(tf.zeros([1, SIZE, SIZE, 3]))
    applied = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])
    grey = np.full((5, SIZE, SIZE, 3), 0.5, np.float32)
    rows = probe.profiled_rows(model, model.uv_model, grey, 60.0)
    assert set(rows) == set(probe.SWAPS)
    exact = rows["exact maps"]
    assert exact["valid"] == 5 and exact["slope"] == pytest.approx(1.0, abs=0.05)
    assert exact["large_applied"] == 60.0 and exact["large_fitted"] == pytest.approx(60.0, abs=3.0)
    images, maps = probe.profiled_examples(model.uv_model, grey, applied)
    yaw, valid = probe.fitted_yaw(model, images, maps)
    assert valid.all()
    np.testing.assert_allclose(yaw, applied, atol=3.0)  # the profiler's yaw has head_pose_degrees' sign
