"""Whole pictures through detection, crops and the shipped model, mapped back to the picture."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from conftest import shared_or_skip
from tfface.detection import crops, pipeline
from tfface.detection.evaluation import match
from tfface.io.images import read_image
from tfface.model import FIT_OK
from tfface.paths import REPO_ROOT
from tfface.training.photo_evaluation import box_nme

#: The public-domain photo the repository ships (one face, in a scene).
ASTRONAUT = REPO_ROOT / "samples" / "astronaut.jpg"


def test_every_output_maps_back_exactly_with_the_crop(runner):
    """The same crop out of a shifted picture: same outputs, picture coordinates shifted."""
    picture = read_image(ASTRONAUT)
    framing = crops.Framing(np.array([225.0, 135.0]), 140.0, 0.3)
    shifted = np.zeros((600, 700, 3), np.uint8)
    shifted[40:552, 70:582] = picture
    moved = crops.Framing(framing.centre + [70.0, 40.0], framing.side, framing.angle)
    face, face_moved = (pipeline.reconstruct_framings(p, [f], runner)[0]
                        for p, f in ((picture, framing), (shifted, moved)))
    np.testing.assert_array_equal(face.crop, face_moved.crop)
    for name in ("landmarks68", "landmarks5", "mesh2d"):
        np.testing.assert_allclose(face_moved.picture[name], face.picture[name] + [70.0, 40.0], atol=1e-3)
    np.testing.assert_allclose(face_moved.picture["R"], face.picture["R"], atol=1e-6)
    # the picture camera projects the fitted landmark vertices onto the mapped-back landmarks
    landmark_ids = runner.mesh.landmarks68
    np.testing.assert_allclose(face.picture["mesh2d"][landmark_ids], face.picture["landmarks68"], atol=0.05)


def test_the_astronauts_face_is_found_and_reconstructed(runner, detector):
    picture = read_image(ASTRONAUT)
    faces = pipeline.reconstruct_picture(picture, detector, runner)
    assert len(faces) == 1
    face = faces[0]
    assert face.detection is not None and face.detection.score > 0.8
    assert face.crop.shape == (runner.image_size, runner.image_size, 3)
    # Her face is seen from the front: the keypoints turn its crop. The shipped model fits it again
    # upright itself, so the picture's upright pass leaves it as it is.
    assert face.framing.method == "keypoints" and face.fitted_upright
    once = pipeline.reconstruct_picture(picture, detector, runner, upright=False)[0]
    np.testing.assert_array_equal(once.outputs["landmarks68"], face.outputs["landmarks68"])
    # her face, by eye: about x 180-270, y 80-175
    np.testing.assert_allclose(face.detection.box, [177.0, 79.0, 273.0, 175.0], atol=8.0)
    assert face.fit_valid and np.isfinite(face.picture["landmarks68"]).all()
    assert set(face.picture) == {"landmarks68", "landmarks5", "mesh2d", "K", "R", "t"}


def test_the_upright_pass_sets_a_turned_face_upright(runner, detector):
    """The astronaut turned by 30 degrees in a crop that is not turned with her: the shipped model
    fits her again in that crop turned upright by its first fit (its own pass: version 17, without
    it, was off by 4% of the crop there) to under 1.5%, and the picture's upright pass leaves that
    face alone. A face the model did not fit upright (its ``upright_fit`` 0, as from an older
    export) gets the picture's pass: the same crop turned back by the fit's roll, fitted as well."""
    picture = read_image(ASTRONAUT)
    upright = pipeline.reconstruct_picture(picture, detector, runner)[0]
    centre = upright.picture["landmarks68"].mean(0)
    turn = math.radians(30.0)  # Pillow turns counter-clockwise as seen, about ``centre``
    rotation = np.array([[math.cos(turn), math.sin(turn)], [-math.sin(turn), math.cos(turn)]])
    turned = np.asarray(Image.fromarray(picture).rotate(30.0, resample=Image.BICUBIC, center=tuple(centre)))
    truth = (upright.picture["landmarks68"] - centre) @ rotation.T + centre

    def error(face: pipeline.Face) -> float:
        return float(np.linalg.norm(face.picture["landmarks68"] - truth, axis=1).mean() / upright.framing.side)

    own = pipeline.reconstruct_framings(turned, [crops.Framing(centre, upright.framing.side, 0.0, "box")], runner)[0]
    assert own.fit_valid and own.fitted_upright and error(own) < 0.015
    assert pipeline.upright_pass(turned, [own], runner)[0] is own
    older = dataclasses.replace(own, outputs={**own.outputs, "upright_fit": np.array(0.0)})
    second = pipeline.upright_pass(turned, [older], runner)[0]
    assert second.fit_valid and second.framing.method == "upright"
    np.testing.assert_allclose(second.framing.centre, centre)
    assert abs(second.framing.angle + turn) < math.radians(8)  # turned back (clockwise) as far, near enough
    assert error(second) < 0.015
    # a face whose first fit is not valid is left as it was
    failed = dataclasses.replace(older, outputs={**older.outputs, "fit_valid": np.array(False)})
    assert pipeline.upright_pass(turned, [failed, older], runner)[0] is failed


def test_no_face_gives_no_faces(runner, detector):
    assert pipeline.reconstruct_picture(np.full((300, 400, 3), 90, np.uint8), detector, runner) == []


def test_batches_keep_the_order(runner):
    picture = read_image(ASTRONAUT)
    framings = [crops.Framing(np.array([225.0, 135.0]), side, 0.0) for side in (120.0, 140.0, 160.0)]
    one_by_one = [pipeline.reconstruct_framings(picture, [f], runner)[0] for f in framings]
    batched = pipeline.reconstruct_framings(picture, framings, runner, batch_size=2)
    for single, face in zip(one_by_one, batched):
        np.testing.assert_allclose(face.picture["landmarks68"], single.picture["landmarks68"], atol=0.05)
    with pytest.raises(Exception, match="detections"):
        pipeline.reconstruct_framings(picture, framings, runner, detections=[None])


def test_a_strewn_detector_crop_fit_is_never_reported_as_a_face(runner, detector):
    """AFLW2000-3D dev photo image02249, a turned face: with its detector crop sampled bilinearly
    without anti-aliasing (a 252-pixel window shrunk to 128), an early shipped network strewed some
    of the 68 landmarks more than half a crop width beyond the crop and reported them. The crop is
    now anti-aliased like the training photos (tests/test_warp.py), versions 9 to 13 fitted this
    face inside its crop (version 13 too wide, box NME 18.7%), and version 14 strews it again,
    landmarks up to 0.58 of the crop beyond its edge: its fit is flagged implausible and reported
    as no face (rules for implausible fits: tests/test_export.py). Version 18 fits it at 11.7%,
    version 19 at 30.5%: inside its crop, but no closer than the mean face in the box (a weak
    spot of version 19's, its model card)."""
    folder = shared_or_skip("data", "aflw2000-3d-dev")
    with np.load(folder / "landmarks.npz") as data:
        points = data["landmarks68"][list(data["names"]).index("image02249")]
    picture = read_image(folder / "images" / "image02249.jpg")
    detection = match(detector(picture), points)
    assert detection is not None  # the detector finds this face
    framing = crops.detection_framing(detection, crops.default_detection_template())
    face = pipeline.reconstruct_framings(picture, [framing], runner, [detection])[0]
    landmarks = np.reshape(face.outputs["landmarks68"], (68, 2)) / runner.image_size
    strewn = not np.all((landmarks > -0.5) & (landmarks < 1.5))  # a landmark half the crop's side beyond it
    assert strewn == (not face.fit_valid)  # a strewn fit is flagged, a valid one lies in its crop
    if face.fit_valid:
        assert face.outputs["fit_status"] == FIT_OK
        assert box_nme(face.picture["landmarks68"][None], points[None])[0] < 0.35
    else:
        assert face.outputs["fit_status"] != FIT_OK
