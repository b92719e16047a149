"""``tfface reconstruct`` on whole photos and videos: every face, original pixels, tracking, bad input."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import shared_or_skip
from tfface import export_commands, scenes
from tfface.detection import crops, warp
from tfface.detection.blazeface import REFINE_BELOW
from tfface.detection.evaluation import load_dev_pictures, match, tiled_scene
from tfface.detection.pipeline import reconstruct_picture
from tfface.errors import InputError
from tfface.io import video
from tfface.io.images import read_image
from tfface.paths import REPO_ROOT
from tfface.reconstruct import InputImage
from tfface.training.photo_evaluation import box_nme

ASTRONAUT = REPO_ROOT / "samples" / "astronaut.jpg"


def _command(*argv):
    parser = argparse.ArgumentParser()
    export_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(map(str, argv)))
    return args.func(args)


def _moving_video(path, frames: int = 10, size: int = 256) -> list[np.ndarray]:
    """The astronaut photo slid and turned a little per frame, written to ``path``; returns the frames."""
    photo = read_image(ASTRONAUT)
    pictures = []
    with video.VideoWriter(path, fps=25) as writer:
        for i in range(frames):
            motion = crops.Framing(np.array([256.0 + 3 * i, 240.0]), 512.0, math.radians(i)).matrix(size)
            pictures.append(warp.warp(photo, motion, size))
            writer.write(pictures[-1])
    return pictures


def test_photos_give_every_face_in_original_pixels(tmp_path, capsys):
    photo = read_image(ASTRONAUT)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(photo).save(inputs / "astronaut.png")
    Image.fromarray(np.concatenate([photo, photo[:, ::-1]], axis=1)).save(inputs / "pair.png")  # two faces, 1024 x 512
    Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(inputs / "wall.png")
    out = tmp_path / "out"
    assert _command("reconstruct", *sorted(inputs.iterdir()), "--out", out, "--face-threshold", 0) == 0
    assert "3 pictures, 3 faces (1 pictures without a face)" in capsys.readouterr().out
    single = json.loads((out / "astronaut.json").read_text())
    pair = json.loads((out / "pair.json").read_text())
    assert single["format"] == scenes.PICTURE_FORMAT and (single["width"], single["height"]) == (512, 512)
    assert single["detector"]["refine_below"] == REFINE_BELOW and single["detector"]["supplement"] == ["short_range@2x2"]
    assert len(single["faces"]) == 1 and len(pair["faces"]) == 2
    face = single["faces"][0]
    assert face["face_detected"] and face["detection"]["score"] > 0.8
    # The shipped model fits the face upright itself: no second crop of the picture was needed.
    assert single["upright_pass"] is True and face["upright_fit"] is True and face["crop"]["framing"] == "keypoints"
    for name in ("landmarks68", "landmarks5", "head_pose_degrees", "camera", "coefficients"):
        assert name in face
    # the mirrored copy's face is the original's, mirrored into the right half: boxes in picture pixels
    # (within 15% of the face: the detector sees the wider picture at a smaller scale)
    boxes = sorted((np.array(f["detection"]["box_xyxy"]) for f in pair["faces"]), key=lambda b: b[0])
    tolerance = 0.15 * (face["detection"]["box_xyxy"][2] - face["detection"]["box_xyxy"][0])
    np.testing.assert_allclose(boxes[0], face["detection"]["box_xyxy"], atol=tolerance)
    np.testing.assert_allclose(boxes[1][[2, 1, 0, 3]] * [-1, 1, -1, 1] + [1024, 0, 1024, 0],
                               face["detection"]["box_xyxy"], atol=tolerance)
    wall = json.loads((out / "wall.json").read_text())
    assert not wall["face_detected"] and wall["reason"] == "no_face_detected" and wall["faces"] == []
    assert Image.open(out / "pair.png").size == (1024, 512) and Image.open(out / "wall.png").size == (300, 200)
    for name in ("astronaut_face0", "pair_face0", "pair_face1"):
        assert (out / f"{name}.obj").stat().st_size > 0 and (out / f"{name}.png").is_file()
    assert _command("reconstruct", inputs / "pair.png", "--out", tmp_path / "one", "--max-faces", 1) == 0
    assert len(json.loads((tmp_path / "one" / "pair.json").read_text())["faces"]) == 1
    assert _command("reconstruct", inputs / "astronaut.png", "--out", tmp_path / "once", "--single-pass") == 0
    once = json.loads((tmp_path / "once" / "astronaut.json").read_text())
    assert once["upright_pass"] is False and once["faces"][0]["crop"]["framing"] == "keypoints"
    assert once["faces"][0]["landmarks68"] == face["landmarks68"]


def test_detected_faces_that_fail_the_model_are_reported_with_their_reason(runner, detector, tmp_path):
    records = scenes.reconstruct_pictures([InputImage("astronaut", read_image(ASTRONAUT))], detector, runner, tmp_path,
                                          scenes.SceneOptions(face_threshold=1.0, progress=False))
    (face,) = records[0]["faces"]
    assert not records[0]["face_detected"] and records[0]["reason"] == "no_face_fitted"
    assert not face["face_detected"] and face["reason"] == "low_face_score" and "landmarks68" not in face
    assert face["detection"]["score"] > 0.8 and not (tmp_path / "astronaut_face0.obj").exists()


def test_scene_options_are_checked():
    with pytest.raises(InputError, match="max-faces"):
        scenes.SceneOptions(max_faces=0)
    with pytest.raises(InputError, match="threshold"):
        scenes.SceneOptions(face_threshold=-1)


def test_video_is_tracked_smoothed_and_overlaid(tmp_path, capsys):
    _moving_video(tmp_path / "clip.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "broken.mov").write_bytes(b"\x00\x00\x00\x14ftypqt  " + bytes(200))
    out = tmp_path / "out"
    status = _command("reconstruct", tmp_path / "clip.mp4", tmp_path / "empty.mp4", tmp_path / "broken.mov",
                      "--out", out, "--face-threshold", 0, "--smooth-beta", 0.5)
    captured = capsys.readouterr()
    assert status == 1  # two inputs skipped, with what was wrong
    assert "empty.mp4: empty file (zero length)" in captured.err and "broken.mov: not a video" in captured.err
    assert "10 video frames" in captured.out
    records = [json.loads((out / f"clip_{i:06d}.json").read_text()) for i in range(10)]
    assert [r["frame"] for r in records] == list(range(10)) and records[3]["time_s"] == pytest.approx(0.12)
    faces = [r["faces"][0] for r in records]
    assert all(f["track"] == 0 and f["face_detected"] for f in faces)
    assert faces[0]["detection"] is not None and not any(r["upright_pass"] for r in records)
    assert faces[0]["landmarks68"] == faces[0]["unsmoothed"]["landmarks68"]  # the first value passes unchanged
    assert any(f["landmarks68"] != f["unsmoothed"]["landmarks68"] for f in faces[1:])
    overlay = list(video.read_frames(out / "clip_overlay.mp4"))
    assert len(overlay) == 10 and overlay[0].shape == (256, 256, 3)
    with pytest.raises(InputError, match="smooth|One-Euro|cutoff"):
        _command("reconstruct", tmp_path / "clip.mp4", "--out", out, "--smooth-min-cutoff", 0)


def test_crops_keep_the_whole_input_as_one_face(tmp_path):
    Image.fromarray(read_image(ASTRONAUT)).save(tmp_path / "astronaut.png")
    assert _command("reconstruct", tmp_path / "astronaut.png", "--out", tmp_path / "out", "--crops",
                    "--face-threshold", 0) == 0
    record = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert "faces" not in record and record["face_detected"] and (tmp_path / "out" / "astronaut.obj").is_file()


def _face_of(faces, points):
    """The face of ``faces`` whose detection finds the face annotated with ``points``, or None."""
    found = match([face.detection for face in faces], points)
    return next((face for face in faces if found is not None and face.detection is found), None)


def test_tiled_dev_photos_give_every_face_with_its_own_landmarks(runner, detector):
    """2-4 dev photos shrunk into a cluttered 800 x 800 picture: every annotated face is found
    (detected), at most one of the 12 fits fails (flagged, so reported as no face), and each valid
    fit's landmarks lie nearer its own annotation than any other face's of the scene, and as close
    to it as when its photo is reconstructed alone: box NME over those faces within 1 point (plus
    5%) of the single-photo figure, each face within 2 times its own plus 5 points (faces shrunk
    to 100-200 px move a fit near the mean face's quality by a few points)."""
    dev = load_dev_pictures(shared_or_skip("data", "aflw2000-3d-dev"), 12)
    tiled, single, failed = [], [], []
    for seed, indices in enumerate(([0, 1, 2, 3], [4, 5, 6], [7, 8], [9, 10, 11])):
        canvas, matrices = tiled_scene([dev.pictures[i] for i in indices], seed)
        truths = np.stack([warp.apply(matrix, dev.landmarks[i]) for i, matrix in zip(indices, matrices)])
        faces = reconstruct_picture(canvas, detector, runner)
        for k, i in enumerate(indices):
            face = _face_of(faces, truths[k])
            assert face is not None, f"the face of photo {i} is not found in scene {seed}"
            if not face.outputs["fit_valid"]:
                failed.append(i)
                continue
            to_each = box_nme(np.repeat(face.picture["landmarks68"][None], len(indices), 0), truths)
            assert np.argmin(to_each) == k, (seed, i, to_each)
            alone = _face_of(reconstruct_picture(dev.pictures[i], detector, runner), dev.landmarks[i])
            assert alone.outputs["fit_valid"]
            tiled.append(to_each[k])
            single.append(box_nme(alone.picture["landmarks68"][None], dev.landmarks[i][None])[0])
    # version 17 fails none (box NME 8.6% in the scenes, 9.0% alone); version 14 (the network of versions 15
    # to 17, before the detector refined small faces) none (9.2 / 9.0; version 13 9.3 / 9.3); version 11
    # failed one: dev photo 4 (image00010, yaw 69), fitted alone at 19% and, shrunk in its scene,
    # with an implausible camera
    assert len(failed) <= 1, failed
    tiled, single = np.array(tiled), np.array(single)
    assert tiled.mean() <= 1.05 * single.mean() + 0.01, (tiled, single)
    assert (tiled <= 2.0 * single + 0.05).all(), (tiled, single)
