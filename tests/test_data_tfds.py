"""TFDS sources on tfds.testing.mock_data (offline) and the missing-dataset message."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfface.data.tfds_sources import CELEB_A_LANDMARKS, aflw2k3d_dataset, celeb_a_dataset, load_split
from tfface.errors import InputError

SIZE = 64


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def test_celeb_a_images_and_landmarks(mock, tmp_path):
    raw = list(load_split("celeb_a", "test", str(tmp_path)).take(3).as_numpy_iterator())
    fitted = list(celeb_a_dataset("test", SIZE, str(tmp_path)).take(3).as_numpy_iterator())
    assert len(fitted) == 3
    for example, out in zip(raw, fitted):
        assert out["image"].shape == (SIZE, SIZE, 3) and out["image"].dtype == np.float32
        assert 0 <= out["image"].min() and out["image"].max() <= 1
        height, width = example["image"].shape[:2]  # 218 x 178: centre square crop, then resize
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        marks = example["landmarks"]
        points = np.array([[marks[f"{n}_x"], marks[f"{n}_y"]] for n in CELEB_A_LANDMARKS], np.float64) + 0.5
        expected = (points - [left, top]) * SIZE / side
        np.testing.assert_allclose(out["landmarks5"], expected, atol=1e-4)


def test_aflw2k3d_images_and_landmarks(mock, tmp_path):
    raw = list(load_split("aflw2k3d", "train", str(tmp_path)).take(2).as_numpy_iterator())
    fitted = list(aflw2k3d_dataset("train", SIZE, str(tmp_path)).take(2).as_numpy_iterator())
    for example, out in zip(raw, fitted):
        assert out["image"].shape == (SIZE, SIZE, 3) and out["landmarks68"].shape == (68, 2)
        side = example["image"].shape[0]  # square 450 x 450
        expected = example["landmarks_68_3d_xy_normalized"] * side * SIZE / side
        np.testing.assert_allclose(out["landmarks68"], expected, atol=1e-4)


def test_missing_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(InputError, match="tfds build celeb_a --data_dir"):
        celeb_a_dataset("train", SIZE, str(tmp_path))
    with pytest.raises(InputError, match="tfds build aflw2k3d"):
        aflw2k3d_dataset("train", SIZE, str(tmp_path))


class TinyFaces(tfds.core.GeneratorBasedBuilder):
    """A real (not mocked) dataset prepared offline, to exercise the split check."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(8, 8, 3))}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": np.full((8, 8, 3), i, np.uint8)}


def test_unknown_split_and_dataset(tmp_path):
    TinyFaces(data_dir=str(tmp_path)).download_and_prepare()
    assert len(list(load_split("tiny_faces", "train", str(tmp_path)))) == 2
    with pytest.raises(InputError, match="no split 'test'"):
        load_split("tiny_faces", "test", str(tmp_path))
    with pytest.raises(InputError, match="unknown TFDS dataset"):
        load_split("no_such_dataset_xyz", "train", str(tmp_path))
