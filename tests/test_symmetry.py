"""Mirror symmetry of face crops and the frontal share of the pretraining photos."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfface.data.symmetry import mirror_symmetry, most_frontal
from tfface.errors import InputError
from tfface.training.config import TrainConfig
from tfface.training.profiling import FaceProfiler

SIZE = 64
TEMPLATE5 = np.array([[0.35, 0.31], [0.65, 0.31], [0.5, 0.45], [0.39, 0.63], [0.61, 0.63]], np.float32) * SIZE


def _textures(count: int, seed: int = 0) -> np.ndarray:
    """``(count, SIZE, SIZE, 3)`` random textures with detail at every scale the score sees."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (count, SIZE // 4, SIZE // 4, 3))
    fine = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    return (0.5 * fine + 0.5 * rng.uniform(0, 1, (count, SIZE, SIZE, 3))).astype(np.float32)


def _symmetric(images: np.ndarray) -> np.ndarray:
    return 0.5 * (images + images[:, :, ::-1])


def test_a_mirror_symmetric_image_scores_one_and_unrelated_halves_about_zero():
    textures = _textures(6)
    np.testing.assert_allclose(mirror_symmetry(_symmetric(textures)).numpy(), 1.0, atol=1e-5)
    assert np.all(np.abs(mirror_symmetry(textures).numpy()) < 0.25)


def test_the_mirror_axis_may_sit_a_few_pixels_off_centre():
    symmetric = _symmetric(_textures(3, seed=1))
    near = mirror_symmetry(np.roll(symmetric, 3, axis=2), max_shift=6).numpy()  # axis 3 px off: shift 6
    far = mirror_symmetry(np.roll(symmetric, 8, axis=2), max_shift=6).numpy()
    np.testing.assert_allclose(near, 1.0, atol=1e-4)  # the roll wraps the edges the blur reaches
    assert np.all(far < 0.5)


def test_flat_and_black_images_score_zero_not_nan():
    scores = mirror_symmetry(np.stack([np.zeros((SIZE, SIZE, 3)), np.full((SIZE, SIZE, 3), 0.7)])).numpy()
    np.testing.assert_array_equal(scores, [0.0, 0.0])


def test_bad_shapes_are_refused():
    with pytest.raises(InputError, match="S, S, 3"):
        mirror_symmetry(np.zeros((2, SIZE, SIZE, 4), np.float32))
    with pytest.raises(InputError, match="S, S, 3"):
        mirror_symmetry(np.zeros((SIZE, SIZE, 3), np.float32))
    with pytest.raises(InputError, match="sigma"):
        mirror_symmetry(np.zeros((1, 16, 16, 3), np.float32))


def test_a_turned_face_scores_below_the_frontal_one(default_uv_model):
    """A symmetric aligned 'face' turned by face profiling (the pretraining's own turn) loses its
    symmetry, the more the further it turns."""
    profiler = FaceProfiler(default_uv_model, TEMPLATE5, SIZE)
    frontal = tf.constant(np.repeat(_symmetric(_textures(1, seed=2)), 4, axis=0))
    yaw = tf.constant(np.radians([0.0, 15.0, 30.0, 50.0]), tf.float32)
    turned, _ = profiler(frontal, yaw, tf.zeros(4))
    scores = mirror_symmetry(turned).numpy()
    assert scores[0] > 0.9
    assert np.all(np.diff(scores) < 0), scores


def test_most_frontal_keeps_the_most_symmetric_share():
    rng = np.random.default_rng(3)
    symmetric = _symmetric(_textures(10, seed=3))
    noise = np.linspace(0.0, 0.9, 10)  # image i is symmetric up to noise[i]
    images = (symmetric + noise[:, None, None, None] * rng.normal(0, 0.3, symmetric.shape)).astype(np.float32)
    order = rng.permutation(10)
    dataset = tf.data.Dataset.from_tensor_slices(images[order])
    kept = np.stack(list(most_frontal(dataset, 0.3).as_numpy_iterator()))
    np.testing.assert_array_equal(kept, images[order][np.isin(order, [0, 1, 2])])
    as_dicts = tf.data.Dataset.from_tensor_slices({"image": images[order]})
    assert len(list(most_frontal(as_dicts, 0.5))) == 5
    assert most_frontal(dataset, 1.0) is dataset


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(InputError, match="share"):
        most_frontal(tf.data.Dataset.from_tensor_slices(np.zeros((2, SIZE, SIZE, 3), np.float32)), share)
    with pytest.raises(InputError, match="pretrain_frontal_share"):
        TrainConfig(pretrain_frontal_share=share)


def test_most_frontal_of_nothing_is_an_error():
    with pytest.raises(InputError, match="at least one"):
        most_frontal(tf.data.Dataset.from_tensor_slices(np.zeros((0, SIZE, SIZE, 3), np.float32)), 0.5)
