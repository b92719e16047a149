"""Evaluation counts its failures: one rule (summarise_errors) for evaluate_batches, fit_floor and
the table."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from test_export import toy_export, toy_faces  # noqa: F401 (fixtures)
from test_model import SIZE, faces  # noqa: F401 (fixture)
from tfface.model import FaceModel
from tfface.training import metrics
from tfface.training.config import CONFIGS
from tfface.training.evaluation import FAILURE_RULE, evaluate_batches, fit_floor, format_table


@pytest.mark.parametrize(("errors", "expected"), [
    ([0.05, np.nan], {"mean": 0.05, "count": 2, "failed": 1, "failed_share": 0.5}),
    ([0.02, 0.04, np.inf, 0.06], {"mean": 0.04, "count": 4, "failed": 1, "failed_share": 0.25}),
    ([0.1, 0.3], {"mean": 0.2, "count": 2, "failed": 0, "failed_share": 0.0}),
])
def test_summarise_errors_excludes_failures_and_counts_them(errors, expected):
    summary = metrics.summarise_errors(np.array(errors))
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value), key


def test_summarise_errors_of_all_failed_or_no_images():
    assert np.isnan(metrics.summarise_errors([np.nan, np.nan])["mean"])
    assert metrics.summarise_errors([np.nan, np.nan])["failed_share"] == 1.0
    empty = metrics.summarise_errors(np.zeros(0))
    assert np.isnan(empty["mean"]) and (empty["count"], empty["failed"], empty["failed_share"]) == (0, 0, 0.0)
    np.testing.assert_array_equal(metrics.failed_fits_as_nan([0.1, 0.2, 0.3], [1.0, 0.0, 1.0]), [0.1, np.nan, 0.3])


def test_one_failed_image_of_two_is_counted_not_averaged(toy_export, toy_faces):
    """Issue 22, finding 2: with one failed fit of two images, evaluation reported the other
    image's NME as the mean over "2" images. Now the mean is over the one valid fit, beside it
    1 failed image (half of them); the direct NME, which needs no fit, is over both."""
    model, _ = toy_export
    images = np.stack([toy_faces["images"][0], np.zeros_like(toy_faces["images"][0])])  # a face, then black
    truth = np.stack([toy_faces["landmarks68"][0]] * 2)
    batch = {"image": tf.constant(images / 255.0, tf.float32), "landmarks68": tf.constant(truth)}
    results = evaluate_batches(model, [batch])
    out = model.infer(batch["image"])
    np.testing.assert_array_equal(out["fit_valid"].numpy(), [1.0, 0.0])
    assert (results["count"], results["failed"], results["failed_share"]) == (2, 1, 0.5)
    assert results["nme68_failed"] == results["nme5_failed"] == 1 and results["direct_nme68_failed"] == 0
    fitted = metrics.nme68(out["landmarks68"].numpy()[:1], truth[:1])[0]  # eagerly, evaluation is compiled
    np.testing.assert_allclose(results["nme68"], fitted, rtol=1e-3)
    direct = metrics.nme68(out["direct_landmarks68"].numpy(), truth).mean()
    np.testing.assert_allclose(results["direct_nme68"], direct, rtol=1e-3)
    assert results["nme68"] < 0.01  # the valid fit is that of the rendering camera
    table = format_table({"toy": results})
    assert "1 (50.0%)" in table.splitlines()[-2] and table.splitlines()[-1] == FAILURE_RULE
    assert f"{100 * results['nme68']:.3f} (1)" in table


def test_fit_floor_counts_failed_fits(default_uv_model, faces):
    """A face without a ground-truth mask gets no confident pixel: its fit fails, and the floor
    is the mean over the other three."""
    model = FaceModel(default_uv_model, CONFIGS["tiny"].replace(image_size=SIZE, num_samples=400))
    model.geometric.translation_weight.assign(0.0)
    full = fit_floor(model, [faces])
    masked = dict(faces, mask=tf.concat([faces["mask"][:1], tf.zeros_like(faces["mask"][1:2]), faces["mask"][2:]], 0))
    floor = fit_floor(model, [masked])
    assert (full["count"], full["failed"]) == (4, 0)
    assert (floor["count"], floor["failed"], floor["failed_share"]) == (4, 1, 0.25)
    assert np.isfinite(floor["nme68"]) and floor["nme68_failed"] == 1
