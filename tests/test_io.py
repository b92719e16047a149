"""Image reading/validation, square fitting, video frames, mesh writers and JSON records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from tfface.errors import InputError
from tfface.io import images as io_images
from tfface.io.images import as_rgb_uint8, fit_to_square, frame_folder, is_video, read_image, read_video_frames
from tfface.io.mesh import write_obj, write_ply
from tfface.io.records import face_record, head_pose_degrees, write_json


def _save(array, path, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_read_image_converts_grey_rgba_palette_and_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(_save(rgb, tmp_path / "rgb.png")), rgb)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(_save(grey, tmp_path / "grey.png")), np.repeat(grey[..., None], 3, -1))
    rgba = np.dstack([rgb, np.full((20, 30), 0, np.uint8)])
    rgba[:10, :, 3] = 255
    out = read_image(_save(rgba, tmp_path / "rgba.png"))
    np.testing.assert_array_equal(out[:10], rgb[:10])  # opaque half kept
    assert out[10:].max() == 0  # transparent half over black
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (20, 30, 3)
    deep = (grey.astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(read_image(tmp_path / "deep.png")[..., 0], grey, atol=1)


def test_read_image_rejects_missing_non_image_corrupt_tiny_and_oversized(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("this is text, not a picture")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "notes.png")
    photo = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=90)
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_image(tmp_path / "truncated.jpg")
    with pytest.raises(InputError, match="at least 16x16"):
        read_image(_save(photo[:8, :8], tmp_path / "tiny.png"))
    monkeypatch.setattr(io_images, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match="downscale"):
        read_image(tmp_path / "photo.jpg")


def test_as_rgb_uint8_validates_arrays():
    grey = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = as_rgb_uint8(grey)
    assert out.shape == (32, 32, 3) and out[0, 0, 0] == 0 and out[-1, -1, 2] == 255
    rgba = np.ones((32, 32, 4), np.float32)
    rgba[..., 3] = 0.5
    assert np.all(as_rgb_uint8(rgba) == 128)
    nan = grey.copy()
    nan[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        as_rgb_uint8(nan)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        as_rgb_uint8(grey * 255.0)
    with pytest.raises(InputError, match="shape"):
        as_rgb_uint8(np.zeros((32, 32, 2), np.uint8))
    with pytest.raises(InputError, match="int16"):
        as_rgb_uint8(np.zeros((32, 32, 3), np.int16))
    with pytest.raises(InputError, match="at least"):
        as_rgb_uint8(np.zeros((8, 64, 3), np.uint8))


def test_fit_to_square_pads_resizes_and_maps_back():
    image = np.zeros((40, 80, 3), np.uint8)
    image[10:12, 60:62] = 255  # a 2x2 spot centred at (61, 11) in pixel coordinates
    square, fit = fit_to_square(image, 40)
    assert square.shape == (40, 40, 3) and fit.scale == 2.0 and fit.offset == (0.0, 20.0)
    row, col = np.unravel_index(np.argmax(square[..., 0]), (40, 40))
    np.testing.assert_allclose(fit.to_original([col + 0.5, row + 0.5]), [61.0, 11.0], atol=1.0)
    np.testing.assert_allclose(fit.matrix() @ [30.5, 15.5, 1.0], [*fit.to_original([30.5, 15.5]), 1.0])


def test_video_frames_from_animated_gif_frame_folder_and_corrupt_video(tmp_path):
    frames = [Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=40)
    assert is_video(tmp_path / "clip.gif")
    decoded = list(read_video_frames(tmp_path / "clip.gif"))
    assert len(decoded) == 4 and [int(f.mean()) for f in decoded] == [0, 40, 80, 120]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (2, 0, 1):
        frames[i].save(folder / f"{i:04d}.png")
    (folder / "notes.txt").write_text("ignored")
    assert [p.name for p in frame_folder(folder)] == ["0000.png", "0001.png", "0002.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image"):
        frame_folder(tmp_path / "empty")
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(InputError, match="clip.mp4: not a video"):
        list(read_video_frames(tmp_path / "clip.mp4"))


def _mesh():
    vertices = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10.5]], np.float64)
    triangles = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1]], np.int32)
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 2.0]])
    return vertices, triangles, colours


def test_write_obj_round_trip(tmp_path):
    vertices, triangles, colours = _mesh()
    write_obj(tmp_path / "m.obj", vertices, triangles, colours)
    lines = (tmp_path / "m.obj").read_text().splitlines()
    v = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")])
    f = np.array([[int(x) for x in line.split()[1:]] for line in lines if line.startswith("f ")])
    np.testing.assert_allclose(v[:, :3], vertices, atol=1e-4)
    np.testing.assert_allclose(v[:, 3:], np.clip(colours, 0, 1), atol=1e-4)
    np.testing.assert_array_equal(f - 1, triangles)
    write_obj(tmp_path / "plain.obj", vertices, triangles)
    assert all(len(line.split()) == 4 for line in (tmp_path / "plain.obj").read_text().splitlines() if line[:2] == "v ")


def test_write_ply_binary_round_trip(tmp_path):
    vertices, triangles, colours = _mesh()
    write_ply(tmp_path / "m.ply", vertices, triangles, colours)
    data = (tmp_path / "m.ply").read_bytes()
    header, body = data.split(b"end_header\n", 1)
    assert b"element vertex 4" in header and b"element face 3" in header and b"property uchar red" in header
    records = np.frombuffer(body[: 4 * 15], dtype=[("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
    np.testing.assert_allclose(records["xyz"], vertices, atol=1e-5)
    np.testing.assert_array_equal(records["rgb"], np.round(np.clip(colours, 0, 1) * 255))
    faces = np.frombuffer(body[4 * 15:], dtype=[("n", "u1"), ("ids", "<i4", (3,))])
    assert np.all(faces["n"] == 3)
    np.testing.assert_array_equal(faces["ids"], triangles)


def test_mesh_writers_reject_bad_meshes(tmp_path):
    vertices, triangles, colours = _mesh()
    bad = vertices.copy()
    bad[0, 0] = np.nan
    for writer in (write_obj, write_ply):
        with pytest.raises(InputError, match="NaN"):
            writer(tmp_path / "x", bad, triangles)
        with pytest.raises(InputError, match="indices"):
            writer(tmp_path / "x", vertices, triangles + 2)
        with pytest.raises(InputError, match="colours"):
            writer(tmp_path / "x", vertices, triangles, colours[:2])


def _rotation(yaw, pitch, roll):
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return np.diag([1.0, -1.0, -1.0]) @ rz @ ry @ rx


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, -10, 5), (-60, 20, -170)])
def test_head_pose_round_trip(angles):
    pose = head_pose_degrees(_rotation(*angles))
    np.testing.assert_allclose([pose["yaw"], pose["pitch"], pose["roll"]], angles, atol=1e-9)


def _outputs():
    K = np.array([[[500.0, 0, 32], [0, 500, 32], [0, 0, 1]]])
    R = _rotation(10, 5, 0)[None]
    t = np.array([[0.0, 0.0, 600.0]])
    points = np.array([[[0.0, 0.0, 0.0], [30.0, 20.0, 10.0]]])
    camera = points @ R[0].T + t[0]
    pixels = (camera @ K[0].T)[..., :2] / camera[..., 2:]
    return {"K": K, "R": R, "t": t, "landmarks68": np.repeat(pixels, 34, axis=1),
            "landmarks5": pixels[:, :1].repeat(5, axis=1), "shape_coefficients": np.zeros((1, 4)),
            "expression_coefficients": np.zeros((1, 3)), "albedo_coefficients": np.zeros((1, 2)),
            "lighting": np.zeros((1, 3, 9))}, camera[0]


def test_face_record_maps_camera_and_landmarks_to_the_original_image(tmp_path):
    outputs, camera = _outputs()
    _, fit = fit_to_square(np.zeros((100, 50, 3), np.uint8), 64)
    record = face_record(outputs, 0, fit, "a.png", True, {"face_score": 0.3})
    assert record["face_detected"] and record["face_score"] == 0.3
    K = np.array(record["camera"]["K"])
    projected = (camera @ K.T)[:, :2] / camera[:, 2:]
    np.testing.assert_allclose(projected, np.array(record["landmarks68"])[[0, 34]], atol=0.02)
    np.testing.assert_allclose(list(record["head_pose_degrees"].values()), [10, 5, 0], atol=1e-3)
    assert record["camera"]["intrinsics_fixed"] is False  # an export without camera_fixed: a fitted K
    fixed = face_record({**outputs, "camera_fixed": np.array([1.0])}, 0, fit, "a.png", True, {"face_score": 0.3})
    assert fixed["camera"]["intrinsics_fixed"] is True
    assert record["upright_fit"] is False  # an export without the upright pass
    upright = face_record({**outputs, "upright_fit": np.array([1.0])}, 0, fit, "a.png", True, {"face_score": 0.3})
    assert upright["upright_fit"] is True
    write_json(tmp_path / "a.json", record)
    assert json.loads((tmp_path / "a.json").read_text())["source"] == "a.png"
    no_face = face_record(outputs, 0, fit, "b.png", False, {"face_score": 0.01})
    assert not no_face["face_detected"] and "landmarks68" not in no_face and "camera" not in no_face
    outputs["K"][0, 0, 0] = math.nan
    with pytest.raises(InputError, match="non-finite"):
        face_record(outputs, 0, fit, "c.png", True, {})
