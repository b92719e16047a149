"""Synthetic faces: self-consistent ground truth, determinism, TFRecord round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfface.data.synthetic import SynthesisConfig, SyntheticFaces
from tfface.data.tfrecords import read_tfrecords, write_tfrecords
from tfface.errors import InputError
from tfface.geometry import camera

SIZE = 64


@pytest.fixture(scope="module")
def faces(default_uv_model):
    return SyntheticFaces(default_uv_model, SynthesisConfig(image_size=SIZE))


@pytest.fixture(scope="module")
def batch(faces):
    return {k: v.numpy() for k, v in next(iter(faces.dataset(6, seed=7, batch_size=3).batch(6))).items()}


def model_vertices(model, batch):
    coefficients = np.concatenate([batch["shape_coefficients"], batch["expression_coefficients"]], 1)
    basis = np.concatenate([model.shape_basis, model.expression_basis]).astype(np.float64)
    return model.mean + np.einsum("bk,knd->bnd", coefficients, basis)


def as64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def test_landmarks_are_projected_landmark_vertices(default_uv_model, batch):
    model = default_uv_model.model
    points = model_vertices(model, batch)[:, model.landmarks68]
    projected, depth = camera.project(*as64(points, batch["K"], batch["R"], batch["t"]))
    assert np.all(depth.numpy() > 0)
    np.testing.assert_allclose(batch["landmarks68"], projected.numpy(), atol=0.01)
    from tfface.morphable.model import landmarks5_from_68
    np.testing.assert_allclose(batch["landmarks5"], landmarks5_from_68(projected.numpy()), atol=0.01)


def test_correspondence_and_depth_reproduce_the_mesh(default_uv_model, batch):
    """UV-3DMM sampled at the correspondence = back-projected depth, to 0.1 mm, at every face pixel."""
    count = batch["image"].shape[0]
    uv = batch["correspondence"].reshape(count, -1, 2)
    sample = default_uv_model.sample(tf.constant(uv))
    coefficients = np.concatenate([batch["shape_coefficients"], batch["expression_coefficients"]], 1)
    surface = sample.mean.numpy() + np.einsum("bpdk,bk->bpd", sample.basis.numpy(), coefficients)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    pixels = np.broadcast_to(np.stack([cols, rows], -1).reshape(1, -1, 2), uv.shape)
    back = camera.unproject(*as64(pixels, batch["depth"].reshape(count, -1), batch["K"], batch["R"], batch["t"]))
    mask = batch["mask"].reshape(count, -1) > 0
    assert mask.sum(1).min() > 200  # every image shows a face
    assert np.all(sample.valid.numpy()[mask] == 1)
    error = np.linalg.norm(surface - back.numpy(), axis=-1)[mask]
    assert error.max() < 0.1
    assert np.all(batch["depth"][batch["mask"] == 0] == 0)
    assert np.all(batch["correspondence"][batch["mask"] == 0] == 0)


def test_sample_contents_and_ranges(faces, batch):
    ks, ke, kr = faces.sizes
    assert batch["image"].shape == (6, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
    assert batch["shape_coefficients"].shape == (6, ks) and batch["albedo_coefficients"].shape == (6, kr)
    assert batch["expression_coefficients"].shape == (6, ke) and batch["lighting"].shape == (6, 9, 3)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    R = batch["R"].astype(np.float64)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1, atol=1e-5)
    # the face (+z) looks towards the camera within the yaw/pitch limits (60 and 25 degrees)
    facing = -(R @ [0, 0, 1])[:, 2]
    assert np.all(facing >= np.cos(np.radians(60)) * np.cos(np.radians(25)) - 1e-5)
    K = batch["K"]
    assert np.all(K[:, 0, 0] >= SIZE * 1.0 - 1e-3) and np.all(K[:, 0, 0] <= SIZE * 4.0 + 1e-3)
    assert np.all(np.isfinite(batch["depth"]))


def test_deterministic_and_seeded(faces, batch):
    again = next(iter(faces.dataset(6, seed=7, batch_size=2).batch(6)))
    for key, value in batch.items():
        np.testing.assert_allclose(again[key].numpy(), value, atol=0.02, err_msg=key)
    other = next(iter(faces.dataset(2, seed=8, batch_size=2).batch(2)))
    assert not np.allclose(other["shape_coefficients"].numpy(), batch["shape_coefficients"][:2])


def test_background_images_are_used(faces):
    grey = tf.data.Dataset.from_tensors({"image": tf.fill([SIZE, SIZE, 3], 0.375)})
    config = SynthesisConfig(image_size=SIZE, background_image_probability=1.0)
    sample = next(iter(SyntheticFaces(faces.uv_model, config).dataset(1, backgrounds=grey)))
    outside = sample["mask"].numpy() == 0
    np.testing.assert_allclose(sample["image"].numpy()[outside], 0.375)


def test_tfrecord_round_trip(faces, batch, tmp_path):
    source = faces.dataset(6, seed=7, batch_size=3)
    paths = write_tfrecords(source, tmp_path, 6, examples_per_shard=4)
    assert len(paths) == 2
    back = next(iter(read_tfrecords(tmp_path).batch(6)))
    assert set(back) == set(batch)
    for key, value in batch.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        tolerance = 0.5 / 255 + 1e-6 if key == "image" else 0
        np.testing.assert_allclose(back[key].numpy(), value, atol=tolerance, rtol=0, err_msg=key)
    only = next(iter(read_tfrecords(tmp_path, keys=("depth",))))
    assert list(only) == ["depth"]
    np.testing.assert_array_equal(only["depth"].numpy(), batch["depth"][0])
    with pytest.raises(InputError, match="no"):
        read_tfrecords(tmp_path, keys=("colour",))
    shuffled = next(iter(read_tfrecords(tmp_path, shuffle_shards=True, seed=1).batch(6)))
    order = np.argsort(shuffled["shape_coefficients"].numpy()[:, 0])
    np.testing.assert_array_equal(shuffled["depth"].numpy()[order],
                                  batch["depth"][np.argsort(batch["shape_coefficients"][:, 0])])


def test_bad_configuration_and_missing_records(tmp_path):
    with pytest.raises(InputError):
        SynthesisConfig(focal_range=(0.0, 1.0))
    with pytest.raises(InputError):
        read_tfrecords(tmp_path)
