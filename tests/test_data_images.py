"""Image folders: decoding, grey/RGBA conversion, corrupt files skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tfface.data.images import fit_square, image_folder_dataset, scan_image_folder
from tfface.errors import InputError


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((30, 30), 200, np.uint8), mode="L").save(tmp_path / "grey.png")
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.PNG")
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "sub" / "photo.jpg", quality=95)
    (tmp_path / "random.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "text.png").write_text("not an image")
    good = (tmp_path / "rgb.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 3])
    good = (tmp_path / "sub" / "photo.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.txt").write_text("ignored: not an image ending")
    return tmp_path


def test_scan_skips_and_counts_unreadable_files(folder):
    scan = scan_image_folder(folder)
    names = sorted(p.split("/")[-1] for p in scan.files)
    assert names == ["grey.png", "photo.jpg", "rgb.png", "rgba.PNG"]
    skipped = sorted(p.split("/")[-1] for p, _ in scan.skipped)
    assert skipped == ["random.jpg", "text.png", "truncated.jpg", "truncated.png"]
    dataset, scan = image_folder_dataset(folder, 16)
    images = [e["image"].numpy() for e in dataset]
    assert len(images) == 4 and len(scan.skipped) == 4
    assert all(i.shape == (16, 16, 3) and i.dtype == np.float32 for i in images)


def test_grey_and_rgba_become_rgb(folder):
    dataset, scan = image_folder_dataset(folder, 8)
    by_name = {p.split("/")[-1]: e["image"].numpy() for p, e in zip(scan.files, dataset)}
    np.testing.assert_allclose(by_name["grey.png"], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(by_name["rgba.PNG"], np.broadcast_to([1.0, 0, 0], (8, 8, 3)), atol=1e-6)
    np.testing.assert_allclose(by_name["photo.jpg"], 128 / 255, atol=3 / 255)


def test_fit_square_maps_points_consistently():
    image = np.zeros((40, 60, 3), np.float32)
    image[10, 35] = 1.0  # pixel (col 35, row 10), centre (35.5, 10.5)
    out, matrix = fit_square(image, 80)
    centre = matrix.numpy() @ [35.5, 10.5, 1.0]
    peak = np.unravel_index(np.argmax(out.numpy()[..., 0]), (80, 80))
    assert abs(peak[1] + 0.5 - centre[0]) <= 1.0 and abs(peak[0] + 0.5 - centre[1]) <= 1.0


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(InputError):
        scan_image_folder(tmp_path / "absent")
    (tmp_path / "bad.jpg").write_text("nope")
    with pytest.raises(InputError, match="no readable"):
        image_folder_dataset(tmp_path, 8)
