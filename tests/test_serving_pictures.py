"""Whole pictures through a served model (in-process gRPC and REST stand-ins running the shipped
export's signature): the client-side helper detects, crops, sends and maps back to the picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from test_serving import grpc_stand_in, rest_stand_in
from tfface.detection.blazeface import FaceDetector
from tfface.detection.pipeline import reconstruct_picture
from tfface.errors import InputError
from tfface.export import ExportedModel
from tfface.io.images import read_image
from tfface.paths import REPO_ROOT
from tfface.reconstruct import DEFAULT_MODEL
from tfface.serving import pictures

#: A two-face picture: the shipped sample beside its mirror image (1024 x 512).
PAIR = np.concatenate([read_image(REPO_ROOT / "samples" / "astronaut.jpg")] * 2, axis=1)


@pytest.fixture(scope="module")
def loaded_default():
    return tf.saved_model.load(str(DEFAULT_MODEL))


@pytest.fixture(scope="module")
def local_faces():
    """The same picture through the export run locally: the reference."""
    return reconstruct_picture(PAIR, FaceDetector(), ExportedModel(DEFAULT_MODEL))


@pytest.mark.parametrize("protocol, stand_in", [("grpc", grpc_stand_in), ("rest", rest_stand_in)])
def test_served_picture_faces_are_the_local_ones_in_picture_pixels(loaded_default, local_faces, protocol, stand_in):
    with stand_in(loaded_default, "tfface_ict") as target:
        served = pictures.ServedModel.from_export(DEFAULT_MODEL, target, "tfface_ict", protocol)
        faces = pictures.picture_faces(PAIR, served)
    assert len(faces) == len(local_faces) == 2
    for face, local in zip(faces, local_faces):
        np.testing.assert_allclose(face["box_xyxy"], local.detection.box, atol=0.01)
        assert face["fit_valid"] == local.fit_valid
        if face["fit_valid"]:
            np.testing.assert_allclose(face["landmarks68"], local.picture["landmarks68"], atol=0.05)
            np.testing.assert_allclose(face["camera"]["K"], local.picture["K"], rtol=1e-4, atol=1e-2)
    left, right = sorted(faces, key=lambda face: face["box_xyxy"][0])
    assert right["box_xyxy"][0] > 512 > left["box_xyxy"][2]  # one face in each half


def test_pictures_command_prints_every_face(loaded_default, tmp_path, capsys):
    Image.fromarray(PAIR).save(tmp_path / "pair.png")
    with rest_stand_in(loaded_default, "tfface_ict") as target:
        assert pictures.main([str(tmp_path / "pair.png"), "--protocol", "rest", "--target", target,
                              "--max-faces", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["faces"]) == 1 and printed["faces"][0]["detector_score"] > 0.5


def test_served_model_checks_its_arguments(tmp_path):
    with pytest.raises(InputError, match="protocol"):
        pictures.ServedModel("localhost:1", "m", 128, protocol="smtp")
    with pytest.raises(InputError, match="not an exported"):
        pictures.ServedModel.from_export(tmp_path, "localhost:1", "m")
