"""The reconstruct job and command on the toy exported model (:mod:`test_export`: its images encode
the maps the network predicts): outputs per image, mapping back to original pixels, bad input, no
face and failed fits; the shipped model."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from test_export import IMAGE_SIZE, TOY_CONFIG, toy_export, toy_faces, toy_images  # noqa: F401 (fixtures)
from tfface import export, export_commands, reconstruct
from tfface.errors import InputError
from tfface.geometry.camera import camera_is_plausible
from tfface.io.images import fit_to_square
from tfface.model import FIT_OK, FaceModel


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
    # 64 x 128, one face beside black (no confidence): padded to a square (two toy faces side by side
    # are fitted as one face strewn over 2.4 image widths, an implausible fit)
    wide = np.concatenate([toy_images[0], np.zeros_like(toy_images[0])], axis=1)
    Image.fromarray(wide).save(inputs / "wide.png")
    Image.fromarray(toy_images[0]).convert("RGBA").save(inputs / "rgba.png")
    Image.fromarray(toy_images[0]).convert("L").save(inputs / "grey.png")  # read as RGB; no maps left in it
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    status = _command("reconstruct", *sorted(inputs.iterdir()), "--out", out, "--model", folder,
                      "--backend", "tflite", "--batch-size", 3, "--crops")
    assert status == 1  # one input skipped
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "4 images, 3 faces, 1 skipped" in captured.out
    for name in ("face", "wide", "rgba"):
        record = json.loads((out / f"{name}.json").read_text())
        assert record["face_detected"] and record["fit_status"] == FIT_OK and "reason" not in record
        assert len(record["landmarks68"]) == 68 and len(record["landmarks5"]) == 5
        assert set(record["head_pose_degrees"]) == {"yaw", "pitch", "roll"}
        assert (out / f"{name}.obj").stat().st_size > 0 and (out / f"{name}.ply").stat().st_size > 0
    for name in ("face", "wide", "rgba", "grey"):
        assert Image.open(out / f"{name}.png").size == (3 * 256, 2 * 256)
    grey = json.loads((out / "grey.json").read_text())
    # no face: the toy network's few confident pixels fix no plausible camera
    assert not grey["face_detected"] and grey["reason"] in ("ill_posed_fit", "implausible_camera")
    assert "camera" not in grey
    assert not (out / "grey.obj").exists() and not (out / "broken.json").exists()


def test_landmarks_and_camera_map_back_to_original_pixels(toy_export, toy_images, tmp_path):
    """One face three ways: a 64 x 64 square with the face in columns 16-47 (black around it), that
    strip alone (64 x 32: padded back to the same square), and the strip enlarged twice (128 x 64:
    padded, then shrunk to the same square up to the resampling). The records must give the same
    landmarks and camera in each image's own pixels."""
    _, folder = toy_export
    square = toy_images[0].copy()
    square[:, :16] = square[:, 48:] = 0
    strip = square[:, 16:48]
    enlarged = np.repeat(np.repeat(strip, 2, axis=0), 2, axis=1)
    assert np.array_equal(fit_to_square(strip, IMAGE_SIZE)[0], square)
    images = [reconstruct.InputImage(name, image) for name, image in
              (("square", square), ("strip", strip), ("enlarged", enlarged))]
    records = {r["source"]: r for r in reconstruct.reconstruct(images, export.ExportedModel(folder), tmp_path,
                                                                  progress=False)}
    assert all(r["face_detected"] for r in records.values())
    landmarks = {name: np.array(r["landmarks68"]) for name, r in records.items()}
    K = {name: np.array(r["camera"]["K"]) for name, r in records.items()}
    # original = model pixels * scale - padding: the strip is the square shifted by 16 pixels ...
    np.testing.assert_allclose(landmarks["strip"], landmarks["square"] - [16.0, 0.0], atol=0.01)
    np.testing.assert_allclose(K["strip"], [[1, 0, -16], [0, 1, 0], [0, 0, 1]] @ K["square"], atol=0.01)
    # ... and the enlarged strip twice the strip (the shrunk copy differs by its resampling only).
    np.testing.assert_allclose(landmarks["enlarged"], 2 * landmarks["strip"], atol=0.5)
    np.testing.assert_allclose(K["enlarged"][:2], 2 * K["strip"][:2], rtol=0.02, atol=1.0)


def constant_maps_model(uv_path, uv=(0.5, 0.5), confidence: float = 0.9) -> export.KerasInference:
    """The toy model with a network that predicts correspondence ``uv``, depth 5 and
    ``confidence`` at every pixel of any image."""
    model = FaceModel(str(uv_path), TOY_CONFIG)
    model(np.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3], np.float32))
    logits = model.unet.get_layer("logits")
    kernel, _ = logits.get_weights()
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    logits.set_weights([np.zeros_like(kernel), np.array([logit(uv[0]), logit(uv[1]), np.log(np.expm1(4.9)),
                                                         logit(confidence), logit(confidence)], np.float32)])
    return export.KerasInference(export.inference_model(model))


def test_a_failed_fit_is_no_face_and_writes_no_mesh(toy_export, toy_images, tmp_path):
    """Issue 22, finding 1: a network predicting high confidence with one correspondence
    everywhere made `reconstruct` report a face (K[0][0] about 1.2e10, pitch 89 degrees) and write
    its mesh. Its fit is ill posed (or its camera implausible): no face, the reason, no mesh."""
    model, _ = toy_export
    noise = np.random.default_rng(1).integers(0, 256, (2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    images = [reconstruct.InputImage(f"noise{i}", image) for i, image in enumerate(noise)]
    records = reconstruct.reconstruct(images, constant_maps_model(model.uv_model_path), tmp_path, progress=False)
    for record in records:
        assert record["face_score"] == 1.0 and record["face_contrast"] > reconstruct.MIN_FACE_CONTRAST
        assert not record["face_detected"] and record["reason"] in ("ill_posed_fit", "implausible_camera")
        assert "camera" not in record and "landmarks68" not in record
    assert not list(tmp_path.glob("*.obj")) and not list(tmp_path.glob("*.ply"))
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_low_confidence_or_contrast_reports_no_face_and_writes_no_mesh(toy_export, toy_images, tmp_path):
    _, folder = toy_export
    dark = toy_images[0].copy()
    dark[..., 2] = 30  # the transparent toy network reads confidence from blue: none here
    flat = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.uint8)  # confident everywhere, nothing varies
    images = [reconstruct.InputImage("dark", dark), reconstruct.InputImage("flat", flat)]
    records = reconstruct.reconstruct(images, export.ExportedModel(folder), tmp_path, progress=False)
    assert [(r["face_detected"], r["reason"]) for r in records] == [(False, "low_face_score"), (False, "low_contrast")]
    assert records[0]["face_score"] < reconstruct.DEFAULT_FACE_THRESHOLD
    assert records[1]["face_contrast"] < reconstruct.MIN_FACE_CONTRAST
    assert all("landmarks68" not in r and "camera" not in r for r in records)
    assert not list(tmp_path.glob("*.obj")) and not list(tmp_path.glob("*.ply"))
    assert len(list(tmp_path.glob("*.png"))) == 2


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


def test_reconstruct_command_errors(toy_export, tmp_path):
    _, folder = toy_export
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no input could be read"):
        _command("reconstruct", tmp_path / "notes.txt", "--out", tmp_path / "out", "--model", folder,
                 "--backend", "tflite", "--crops")
    with pytest.raises(InputError, match="batch-size"):
        _command("reconstruct", tmp_path / "notes.txt", "--out", tmp_path / "out", "--batch-size", 0)
    with pytest.raises(InputError, match="threshold"):
        reconstruct.reconstruct([], export.ExportedModel(folder, "tflite"), tmp_path, face_threshold=2.0)


def test_shipped_default_model_reconstructs_an_image_of_any_size(tmp_path):
    """The shipped model (its export returns fit_valid and fit_status) on a 240 x 180 image: the record holds the model's own valid fit mapped to the image's pixels, not
    the K = R = I placeholder of a failed decomposition, and the mesh it fitted."""
    runner = reconstruct.load_runner()  # savedmodel/tfface_ict/20 of the repository
    assert runner.folder == reconstruct.DEFAULT_MODEL
    coarse = np.random.default_rng(5).uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    photo = np.asarray(Image.fromarray(coarse).resize((240, 180), Image.Resampling.BICUBIC))
    (record,) = reconstruct.reconstruct([reconstruct.InputImage("photo", photo)], runner, tmp_path,
                                        face_threshold=0.0, progress=False)
    square, fit = fit_to_square(photo, runner.image_size)
    out = runner(square[None])
    assert "fit_valid" in runner.metadata["outputs"]  # the model reports its own validity
    assert record["face_detected"] and record["fit_status"] == FIT_OK == out["fit_status"][0]
    assert bool(camera_is_plausible(out["K"], out["R"], out["t"], runner.image_size)[0])
    assert not np.allclose(out["K"][0], np.eye(3)) and not np.allclose(out["R"][0], np.eye(3))
    # original pixels = model pixels * 240 / 128 - (0, 30) padding
    np.testing.assert_allclose(record["camera"]["K"], fit.matrix() @ out["K"][0], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(record["camera"]["K"][0][0], out["K"][0, 0, 0] * 240 / 128, rtol=1e-5)
    np.testing.assert_allclose(record["landmarks68"], out["landmarks68"][0] * 240 / 128 - [0, 30], atol=0.01)
    R = np.array(record["camera"]["R"])
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-4)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-4)
    vertices = np.array([line.split()[1:4] for line in (tmp_path / "photo.obj").read_text().splitlines()
                         if line.startswith("v ")], float)
    np.testing.assert_allclose(vertices, out["vertices"][0], atol=1e-3)


@pytest.fixture(scope="module")
def work_folder(toy_export, tmp_path_factory):
    """A training work folder (config.json, uv3dmm.npz, train/final.weights.h5) of the toy model."""
    import shutil

    from test_export import TOY_CONFIG

    model, _ = toy_export
    work = tmp_path_factory.mktemp("run")
    (work / "train").mkdir()
    (work / "config.json").write_text(TOY_CONFIG.to_json())
    shutil.copy(model.uv_model_path, work / "uv3dmm.npz")
    model.save_weights(work / "train" / "final.weights.h5")
    return work


@pytest.mark.slow
def test_known_intrinsics_are_kept_and_identity_is_shared(toy_export, toy_images, work_folder, tmp_path):
    model, _ = toy_export
    free = export.KerasInference(model)(toy_images)
    for i, image in enumerate(toy_images):
        Image.fromarray(image).save(tmp_path / f"view{i}.png")
    views = [tmp_path / "view0.png", tmp_path / "view1.png"]
    weights = work_folder / "train" / "final.weights.h5"
    focal, cx, cy = free["K"][0, 0, 0], free["K"][0, 0, 2], free["K"][0, 1, 2]
    assert _command("reconstruct", *views, "--out", tmp_path / "known", "--weights", weights,
                    "--intrinsics", f"{focal},{focal},{cx},{cy}", "--face-threshold", 0) == 0
    for i in range(2):
        K = np.array(json.loads((tmp_path / "known" / f"view{i}.json").read_text())["camera"]["K"])
        np.testing.assert_allclose(K, [[focal, 0, cx], [0, focal, cy], [0, 0, 1]], rtol=1e-3, atol=1e-2 * focal / 1e3)
    assert _command("reconstruct", *views, "--out", tmp_path / "same", "--weights", weights, "--same-person",
                    "--face-threshold", 0) == 0
    shared = [json.loads((tmp_path / "same" / f"view{i}.json").read_text())["coefficients"] for i in range(2)]
    assert shared[0]["shape"] == shared[1]["shape"]  # one identity for both views
    assert shared[0]["expression"] != shared[1]["expression"]  # per-view expressions
    assert not np.allclose(free["shape_coefficients"][0], free["shape_coefficients"][1], atol=1e-3)


def test_variant_flags_need_weights_and_valid_intrinsics(work_folder, tmp_path):
    weights = work_folder / "train" / "final.weights.h5"
    with pytest.raises(InputError, match="pass --weights"):
        _command("reconstruct", tmp_path, "--out", tmp_path / "o", "--same-person")
    with pytest.raises(InputError, match="fx,fy,cx,cy"):
        _command("reconstruct", tmp_path, "--out", tmp_path / "o", "--weights", weights, "--intrinsics", "1,2,3")
    with pytest.raises(InputError, match="positive focal"):
        _command("reconstruct", tmp_path, "--out", tmp_path / "o", "--weights", weights, "--intrinsics=-5,5,1,1")
    with pytest.raises(InputError, match="cannot be combined"):
        _command("reconstruct", tmp_path, "--out", tmp_path / "o", "--weights", weights, "--intrinsics", "5,5,1,1",
                 "--same-person")


def test_shipped_default_model_reports_no_face_on_noise_and_flat_images(tmp_path):
    rng = np.random.default_rng(0)
    images = {"noise": rng.integers(0, 256, (150, 200, 3), dtype=np.uint8),
              **{f"flat{v}": np.full((120, 120, 3), v, np.uint8) for v in (0, 128, 255)}}
    records = reconstruct.reconstruct([reconstruct.InputImage(k, v) for k, v in images.items()],
                                      reconstruct.load_runner(), tmp_path, progress=False)
    assert [r["face_detected"] for r in records] == [False] * 4
    assert all(r["reason"] in ("low_face_score", "low_contrast", "ill_posed_fit", "implausible_camera")
               for r in records)
    assert not list(tmp_path.glob("*.obj"))
