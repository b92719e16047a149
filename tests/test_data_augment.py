"""Random similarity augmentation: warps, points, cameras and background fill agree exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tfface.data.augment import (SimilarityRange, augment_batch, augment_dataset, confine_disc, coverage,
                                 fill_background, random_similarity, similarity_matrices, transform_batch,
                                 transform_points, warp_images)
from tfface.errors import InputError
from tfface.geometry import camera

H, W = 24, 32


def coordinate_maps(batch):
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    return np.broadcast_to(np.stack([cols, rows], -1), (batch, H, W, 2)).astype(np.float32)


def test_identity_warp_is_exact():
    images = np.random.default_rng(0).uniform(size=(2, H, W, 3)).astype(np.float32)
    identity = similarity_matrices([0.0, 0.0], [1.0, 1.0], np.zeros((2, 2)), H, W)
    for mode in ("BILINEAR", "NEAREST"):
        np.testing.assert_allclose(warp_images(images, identity, mode).numpy(), images, atol=1e-6)


def test_warped_coordinates_follow_the_inverse_transform():
    """Warping a map whose value is the pixel centre gives, at output p, the input point A^-1 p."""
    transforms = random_similarity([3, 4], 3, H, W, SimilarityRange(scale=(0.7, 1.4)))
    warped = warp_images(coordinate_maps(3), transforms, "BILINEAR", fill_value=-1.0).numpy()
    expected = transform_points(coordinate_maps(3).reshape(3, -1, 2), tf.linalg.inv(transforms)).numpy()
    expected = expected.reshape(3, H, W, 2)
    inside = np.all((expected > 0.5) & (expected < [W - 0.5, H - 0.5]), axis=-1)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(warped[inside], expected[inside], atol=2e-3)


def test_closed_form_coverage_equals_warped_ones():
    transforms = random_similarity([7, 8], 4, H, W, SimilarityRange(scale=(0.6, 1.3), translation=0.3))
    ones = warp_images(np.ones((4, H, W, 1), np.float32), transforms)[..., 0].numpy()
    np.testing.assert_allclose(coverage(transforms, H, W).numpy(), ones, atol=1e-4)
    assert 0.05 < (ones < 1).mean() < 0.95


def test_similarity_is_rotation_scale_translation():
    A = similarity_matrices([math.pi / 2], [2.0], [[1.0, -3.0]], H, W).numpy()[0]
    centre = np.array([W / 2, H / 2])
    np.testing.assert_allclose(A[:2, :2], [[0, -2], [2, 0]], atol=1e-6)
    np.testing.assert_allclose(A[:2, :2] @ centre + A[:2, 2], centre + [1, -3], atol=1e-5)


def test_augment_batch_transforms_maps_points_and_camera_together():
    """A scene with a camera: after augmentation, projecting with the new camera lands on the
    transformed points, and the nearest-warped coordinate map matches the inverse transform."""
    rng = np.random.default_rng(1)
    points = rng.uniform(-20, 20, size=(2, 10, 3))
    K = np.array([[60, 0, W / 2], [0, 60, H / 2], [0, 0, 1]], np.float64)[None].repeat(2, 0)
    R = np.diag([1.0, -1.0, -1.0])[None].repeat(2, 0)
    t = np.array([[0, 0, 300.0]]).repeat(2, 0)
    pixels, _ = camera.project(points, K, R, t)
    batch = {"image": rng.uniform(size=(2, H, W, 3)).astype(np.float32),
             "correspondence": coordinate_maps(2), "mask": np.ones((2, H, W), np.float32),
             "landmarks68": pixels.numpy().astype(np.float32), "K": K.astype(np.float32),
             "R": R.astype(np.float32), "t": t.astype(np.float32), "name": tf.constant(["a", "b"])}
    out = augment_batch(batch, [5, 6])
    new_pixels, _ = camera.project(points, *[tf.cast(out[k], tf.float64) for k in ("K", "R", "t")])
    np.testing.assert_allclose(out["landmarks68"].numpy(), new_pixels.numpy(), atol=1e-3)
    K2, R2 = out["K"].numpy(), out["R"].numpy()
    assert np.all(K2[:, 0, 0] > 0) and np.all(K2[:, 1, 1] > 0)
    np.testing.assert_allclose(K2[:, 1, 0], 0, atol=1e-6)
    np.testing.assert_allclose(K2[:, 2], [[0, 0, 1]] * 2, atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(R2), 1, atol=1e-5)
    inverse = transform_points(coordinate_maps(2).reshape(2, -1, 2), tf.linalg.inv(out["similarity"]))
    inverse = inverse.numpy().reshape(2, H, W, 2)
    valid = out["mask"].numpy() > 0
    assert np.array_equal(valid, out["valid"].numpy() > 0)
    # nearest-neighbour: the value is the centre of the input pixel containing A^-1 p
    np.testing.assert_allclose(out["correspondence"].numpy()[valid], np.floor(inverse[valid]) + 0.5, atol=1e-4)
    assert out["name"] is batch["name"]


def test_background_is_filled_from_another_image():
    images = np.stack([np.full((H, W, 3), 0.2), np.full((H, W, 3), 0.7)]).astype(np.float32)
    ranges = SimilarityRange(scale=(0.5, 0.5), translation=0.0)
    out = augment_batch({"image": images}, [1, 2], ranges)
    valid = out["valid"].numpy() > 0
    interior = valid & np.roll(valid, 1, 1) & np.roll(valid, -1, 1) & np.roll(valid, 1, 2) & np.roll(valid, -1, 2)
    np.testing.assert_allclose(out["image"].numpy()[0][interior[0]], 0.2, atol=1e-5)
    corner = out["image"].numpy()[:, 0, 0]
    np.testing.assert_allclose(corner, [[0.7] * 3, [0.2] * 3], atol=1e-5)  # each from the other image
    black = augment_batch({"image": images}, [1, 2], ranges, fill=False)
    np.testing.assert_allclose(black["image"].numpy()[:, 0, 0], 0, atol=1e-6)


def _disc_preimage_radius(transforms, radius: float, side: int = 64) -> np.ndarray:
    """``(B,)`` farthest distance (fraction of the side) from the centre of the input points that
    the output's centred disc of ``radius`` samples (its rim mapped back)."""
    angles = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    rim = np.stack([side / 2 + radius * side * np.cos(angles), side / 2 + radius * side * np.sin(angles),
                    np.ones_like(angles)])
    back = np.linalg.inv(np.asarray(transforms, np.float64)) @ rim
    return np.hypot(back[:, 0] - side / 2, back[:, 1] - side / 2).max(-1) / side


def test_confined_disc_samples_only_the_source_disc():
    side, radius, source = 64, 0.4, 0.45
    reach = source - 0.5 / side  # half a pixel inside, where bilinear sampling reads only the source
    ranges = SimilarityRange.symmetric(40.0, (0.6, 1.4), 0.2)
    drawn = random_similarity([3, 4], 500, side, side, ranges).numpy()
    confined = confine_disc(drawn, radius, source, side, side).numpy()
    before, after = _disc_preimage_radius(drawn, radius), _disc_preimage_radius(confined, radius)
    inside = before <= reach
    assert 0.1 < inside.mean() < 0.9  # both cases occur
    np.testing.assert_allclose(confined[inside], drawn[inside], atol=1e-4)  # already inside: unchanged
    np.testing.assert_allclose(after[~inside], reach, atol=1e-4)  # moved just onto the rim, no further
    scale = np.sqrt(np.linalg.det(drawn[:, :2, :2]))
    np.testing.assert_allclose(np.sqrt(np.linalg.det(confined[:, :2, :2])), np.maximum(scale, radius / reach),
                               rtol=1e-5)  # zoomed only when the disc cannot fit otherwise
    angle = lambda m: np.arctan2(m[:, 1, 0], m[:, 0, 0])
    np.testing.assert_allclose(angle(confined), angle(drawn), atol=1e-5)  # the turn is kept
    per_image = confine_disc(drawn[:2], radius, [0.5, 0.42], side, side).numpy()
    assert _disc_preimage_radius(per_image, radius)[1] <= 0.42 - 0.5 / side + 1e-4


def test_confined_augmentation_keeps_the_fill_out_of_the_disc():
    images = np.stack([np.full((H, W, 3), 0.2), np.full((H, W, 3), 0.7)]).astype(np.float32)
    ranges = SimilarityRange(scale=(0.5, 0.6), translation=0.2)
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    disc = np.hypot(cols - W / 2, rows - H / 2) <= 0.35 * H
    free = augment_batch({"image": images}, [5, 6], ranges)["image"].numpy()
    assert np.ptp(free[0][disc]) > 0.3  # unconfined, the other image shows inside the disc
    confined = augment_batch({"image": images}, [5, 6], ranges, confine=(0.35, 0.5))["image"].numpy()
    np.testing.assert_allclose(confined[0][disc], 0.2, atol=1e-5)
    np.testing.assert_allclose(confined[1][disc], 0.7, atol=1e-5)


def test_augment_dataset_is_reproducible_inside_tf_data():
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(6, H, W, 3)).astype(np.float32)
    points = rng.uniform(0, W, size=(6, 5, 2)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "landmarks5": points})
    first = list(augment_dataset(dataset, 3, seed=9))
    second = list(augment_dataset(dataset, 3, seed=9))
    other = list(augment_dataset(dataset, 3, seed=10))
    assert len(first) == 2 and first[0]["image"].shape == (3, H, W, 3)
    np.testing.assert_array_equal(first[1]["image"].numpy(), second[1]["image"].numpy())
    assert not np.allclose(first[0]["image"].numpy(), other[0]["image"].numpy())
    # each example has its own transform, applied to its landmarks too
    transforms = tf.concat([b["similarity"] for b in first], 0)
    assert not np.allclose(transforms[0], transforms[1])
    np.testing.assert_allclose(tf.concat([b["landmarks5"] for b in first], 0).numpy(),
                               transform_points(points, transforms).numpy(), atol=1e-4)
    # same as augment_batch with those transforms: warp, then fill from the rolled batch
    warped = transform_batch({"image": images[:3]}, transforms[:3])
    expected = fill_background(warped, np.roll(images[:3], 1, axis=0))["image"]
    np.testing.assert_allclose(first[0]["image"].numpy(), expected.numpy(), atol=1e-5)


def test_bad_input():
    with pytest.raises(InputError):
        augment_batch({"image": np.zeros((H, W, 3), np.float32)}, [0, 0])
    with pytest.raises(InputError):
        SimilarityRange(scale=(0.0, 1.0))
