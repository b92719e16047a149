"""The reconstruct job and command on the toy exported model: outputs per image, bad input, no face."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from test_export import IMAGE_SIZE, ramp_model, toy_export, toy_images  # noqa: F401 (fixtures)
from tfface import export, export_commands, reconstruct
from tfface.errors import InputError


def _command(*argv):
    parser = argparse.ArgumentParser()
    export_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(map(str, argv)))
    return args.func(args)


def test_reconstruct_command_writes_mesh_landmarks_pose_and_panel(toy_export, toy_images, tmp_path, capsys):
    _, folder = toy_export
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(toy_images[0]).save(inputs / "face.png")
    wide = np.concatenate([toy_images[1], toy_images[0]], axis=1)  # 64 x 128: padded to a square
    Image.fromarray(wide).save(inputs / "wide.jpg")
    Image.fromarray(toy_images[0]).convert("L").save(inputs / "grey.png")
    Image.fromarray(toy_images[0]).convert("RGBA").save(inputs / "rgba.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    status = _command("reconstruct", *sorted(inputs.iterdir()), "--out", out, "--model", folder,
                      "--backend", "tflite", "--batch-size", 3)
    assert status == 1  # one input skipped
    assert "skipped" in capsys.readouterr().err
    for name in ("face", "wide", "grey", "rgba"):
        record = json.loads((out / f"{name}.json").read_text())
        assert record["face_detected"] and len(record["landmarks68"]) == 68 and len(record["landmarks5"]) == 5
        assert set(record["head_pose_degrees"]) == {"yaw", "pitch", "roll"}
        assert (out / f"{name}.obj").stat().st_size > 0 and (out / f"{name}.ply").stat().st_size > 0
        assert Image.open(out / f"{name}.png").size == (3 * 256, 2 * 256)
    assert not (out / "broken.json").exists()
    # The padded wide image's landmarks are in original pixels: x spans the 128-pixel width.
    wide_record = json.loads((out / "wide.json").read_text())
    face_record = json.loads((out / "face.json").read_text())
    assert wide_record["camera"]["K"] != face_record["camera"]["K"]


def test_reconstruct_frame_folder_and_animation_frame_by_frame(toy_export, toy_images, tmp_path):
    _, folder = toy_export
    frames = tmp_path / "clip"
    frames.mkdir()
    for i, image in enumerate(toy_images):
        Image.fromarray(image).save(frames / f"{i:03d}.png")
    Image.fromarray(toy_images[0]).save(tmp_path / "anim.gif", save_all=True,
                                        append_images=[Image.fromarray(toy_images[1])], duration=40)
    runner = export.ExportedModel(folder)
    errors = []
    records = reconstruct.reconstruct(reconstruct.iter_inputs([frames, tmp_path / "anim.gif"], errors), runner,
                                      tmp_path / "out", progress=False)
    assert errors == [] and [r["source"] for r in records] == ["clip_000", "clip_001", "anim_000000", "anim_000001"]


def test_low_confidence_reports_no_face_and_writes_no_mesh(toy_export, toy_images, tmp_path):
    model, _ = toy_export
    unsure = export.KerasInference(ramp_model(model.uv_model_path, toy_images, confidence=0.02))
    flat = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.uint8)
    images = [reconstruct.InputImage("noise", toy_images[0]), reconstruct.InputImage("flat", flat)]
    records = reconstruct.reconstruct(images, unsure, tmp_path, progress=False)
    for record in records:
        assert not record["face_detected"] and record["face_score"] < 0.05
        assert "landmarks68" not in record and "camera" not in record
    assert not list(tmp_path.glob("*.obj")) and not list(tmp_path.glob("*.ply"))
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_reconstruct_command_errors(toy_export, tmp_path):
    _, folder = toy_export
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no input could be read"):
        _command("reconstruct", tmp_path / "notes.txt", "--out", tmp_path / "out", "--model", folder,
                 "--backend", "tflite")
    with pytest.raises(InputError, match="batch-size"):
        _command("reconstruct", tmp_path / "notes.txt", "--out", tmp_path / "out", "--batch-size", 0)
    with pytest.raises(InputError, match="threshold"):
        reconstruct.reconstruct([], export.ExportedModel(folder, "tflite"), tmp_path, face_threshold=2.0)
