"""The AFLW2000-3D protocol: annotated photo folders, canonical crops, NMEs by yaw bin, failures."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from PIL import Image

from tfface.data.annotated import AnnotatedPhotos, load_aflw2000_dev, load_annotated, load_pts_folder, read_pts
from tfface.data.framing import template_landmarks68
from tfface.errors import InputError
from tfface.paths import shared_dir
from tfface.training.config import CONFIGS
from tfface.training.loop import build_model
from tfface.training.photo_sheet import FIT_COLOUR, TRUTH_COLOUR, photo_sheet, spread_over_yaw
from tfface.training.photo_evaluation import (box_nme, evaluate_photos, format_photo_table, interocular_nme,
                                              keras_runner, mean_shape_in_box, predict_landmarks, summarise)

SIZE = 32


def _face_points(centre=(100.0, 120.0), scale: float = 1.0) -> np.ndarray:
    """68 points spread over a 60 x 40 box (x wider), eye corners 36 and 45 30 px apart."""
    rng = np.random.default_rng(int(centre[0]))
    points = rng.uniform([-30, -20], [30, 20], (68, 2))
    points[0], points[1] = [-30, -20], [30, 20]  # the box corners
    points[36], points[45] = [-15, -10], [15, -10]
    return points * scale + centre


def test_box_and_interocular_nme_by_hand():
    target = _face_points()[None]
    predicted = target + [3.0, 4.0]  # every point 5 px off
    assert box_nme(predicted, target)[0] == pytest.approx(5 / np.sqrt(60 * 40))
    assert interocular_nme(predicted, target)[0] == pytest.approx(5 / 30)


def _photos_folder(tmp_path, count: int = 3):
    """Photos with .pts files; the first photo's face sits partly outside the photo."""
    truth = []
    for index in range(count):
        points = _face_points(centre=(40.0 + 60 * index, 90.0))
        Image.fromarray(np.full((160, 240, 3), 40 * index, np.uint8)).save(tmp_path / f"p{index}.jpg")
        lines = ["version: 1", "n_points: 68", "{", *(f"{x:.3f} {y:.3f}" for x, y in points), "}"]
        (tmp_path / f"p{index}.pts").write_text("\n".join(lines))
        truth.append(points)
    return np.stack(truth)


def test_pts_folder_crops_canonically_and_maps_back_to_photo_pixels(tmp_path):
    truth = _photos_folder(tmp_path)
    photos = load_pts_folder(tmp_path, SIZE)
    assert photos.images.shape == (3, SIZE, SIZE, 3) and list(photos.names) == ["p0", "p1", "p2"]
    np.testing.assert_allclose(photos.annotations["landmarks68"], truth, atol=1e-3)
    np.testing.assert_allclose(photos.crops[:, 2], 1.5 * 60, atol=1.0)  # 1.5 x the longer box side
    # the ground truth seen in crop pixels maps back onto itself
    in_crop = (truth - photos.crops[:, None, :2]) * SIZE / photos.crops[:, None, 2:3]
    np.testing.assert_allclose(photos.to_photo(in_crop), truth, atol=1e-9)
    np.testing.assert_allclose(photos.to_crop(truth), in_crop, atol=1e-9)
    # the crop holds the photo's pixels (third photo, grey 80) and black outside it
    assert photos.images[2, SIZE // 2, SIZE // 2, 0] == pytest.approx(80, abs=2)
    assert load_annotated(tmp_path, SIZE, limit=2).images.shape[0] == 2


def test_bad_pts_files_and_folders_raise(tmp_path):
    (tmp_path / "short.pts").write_text("version: 1\n{\n1 2\n}\n")
    with pytest.raises(InputError, match="68"):
        read_pts(tmp_path / "short.pts")
    (tmp_path / "nobrace.pts").write_text("1 2\n3 4\n")
    with pytest.raises(InputError, match="pts"):
        read_pts(tmp_path / "nobrace.pts")
    with pytest.raises(InputError, match=".pts"):
        load_pts_folder(tmp_path, SIZE)
    with pytest.raises(InputError, match="landmarks.npz"):
        load_aflw2000_dev(tmp_path, SIZE)


def test_aflw2000_layout_and_the_protocol_summary(tmp_path):
    truth = _photos_folder(tmp_path, 4)
    (tmp_path / "images").mkdir()
    for index in range(4):
        (tmp_path / f"p{index}.jpg").rename(tmp_path / "images" / f"p{index}.jpg")
    yaw = np.array([10.0, 40.0, 70.0, -90.0])
    np.savez(tmp_path / "landmarks.npz", names=np.array([f"p{i}" for i in range(4)]), landmarks68=truth,
             landmarks68_original=truth + 1.0, yaw_pitch_roll_degrees=np.stack([yaw, 0 * yaw, 0 * yaw], -1))
    photos = load_aflw2000_dev(tmp_path, SIZE)
    offsets = np.array([1.0, 2.0, 3.0, 4.0])  # image i is off by (offset, 0) px
    predicted = truth + offsets[:, None, None] * [1.0, 0.0]
    failed = np.array([False, False, True, False])  # the 70-degree face failed
    table = summarise(predicted, photos, failed)["landmarks68"]
    unit = np.sqrt(60 * 40)
    assert table["count"] == 3 and table["failed"] == 1
    assert table["nme"] == pytest.approx(np.mean([1, 2, 4]) / unit)  # failures are excluded
    assert table["nme_yaw_0_30"] == pytest.approx(1 / unit)
    assert table["nme_yaw_30_60"] == pytest.approx(2 / unit)
    assert table["nme_yaw_60_90"] == pytest.approx(4 / unit)  # |yaw| = 90 belongs to the last bin
    assert table["nme_yaw_mean"] == pytest.approx(np.mean([1, 2, 4]) / unit)
    assert "landmarks68_original" in summarise(predicted, photos, failed)
    text = format_photo_table({"model": summarise(predicted, photos, failed)})
    assert "model / landmarks68" in text and "failed" in text


def test_predict_landmarks_flags_non_finite_and_invalid_fits(tmp_path):
    _photos_folder(tmp_path, 3)
    photos = load_pts_folder(tmp_path, SIZE)

    def run(images):
        landmarks = np.full((len(images), 68, 2), SIZE / 2.0)
        landmarks[0, 0, 0] = np.nan
        return {"landmarks68": landmarks, "fit_valid": np.array([True, True, False])[:len(images)]}

    points, failed = predict_landmarks(run, photos, batch_size=3)
    assert failed.tolist() == [True, False, True]
    np.testing.assert_allclose(points[1], np.broadcast_to(photos.crops[1, :2] + photos.crops[1, 2] / 2, (68, 2)))


def test_mean_shape_in_the_box_on_real_dev_photos(default_model):
    folder = shared_dir() / "data" / "aflw2000-3d-dev"
    if not folder.is_dir():
        pytest.skip(f"no AFLW2000-3D dev photos at {folder} (set TFFACE_SHARED)")
    photos = load_aflw2000_dev(folder, 64, limit=40)
    table = mean_shape_in_box(photos, template_landmarks68(default_model))["landmarks68"]
    # the baseline that localises nothing: about 17-19% on the dev half, never near 0 or 100
    assert 0.10 < table["nme"] < 0.30 and table["failed"] == 0


def test_sheet_photos_spread_over_yaw():
    yaw = np.array([80.0, -5.0, 40.0, 10.0, -60.0, 0.0, 25.0, -89.0, 50.0])
    photos = AnnotatedPhotos(np.arange(9).astype(str), np.zeros((9, SIZE, SIZE, 3), np.uint8), np.zeros((9, 3)),
                             {"landmarks68": np.zeros((9, 68, 2))}, yaw)
    np.testing.assert_array_equal(spread_over_yaw(photos, 3), [5, 2, 7])  # |yaw| 0, 40, 89
    with pytest.raises(InputError):
        spread_over_yaw(photos, 10)


@pytest.mark.slow
def test_the_shipped_model_on_real_dev_photos():
    from tfface.export import ExportedModel
    from tfface.reconstruct import DEFAULT_MODEL

    folder = shared_dir() / "data" / "aflw2000-3d-dev"
    if not folder.is_dir():
        pytest.skip(f"no AFLW2000-3D dev photos at {folder} (set TFFACE_SHARED)")
    model = ExportedModel(DEFAULT_MODEL)
    photos = load_aflw2000_dev(folder, model.image_size, limit=1000).subset(np.arange(0, 1000, 42))  # 24 photos
    table = evaluate_photos(model, photos)["landmarks68"]
    # every face found; versions 15 and 14 (one network) score 9.0% on these 24 (9.4% on all 1,000,
    # model card; version 13 9.3%, version 12 9.8%, version 11 10.9%, version 10 11.3%, version 9 13.6% on these). The
    # bound fails the renders-only version 1 (130%), the mean face in the box (19.2% on these) and
    # any model that does not follow the face.
    assert table["failed"] == 0 and table["count"] == 24
    assert table["nme"] < 0.17

    # The contact sheet of four of them: panels in a 2 x 2 grid, the ground truth drawn in red
    # where it lies in each crop, the fit in green where the model put it.
    indices = spread_over_yaw(photos, 4)
    tile = 64
    sheet = np.asarray(photo_sheet(model, photos, indices, columns=2, tile_size=tile))
    assert sheet.shape == (2 * 2 * tile, 2 * 3 * tile, 3)
    fitted = model(photos.images[indices])["landmarks68"]
    scale = tile / model.image_size
    for k, index in enumerate(indices):
        origin = np.array([(k % 2) * 3 * tile, (k // 2) * 2 * tile])
        truth = (photos.annotations["landmarks68"][index] - photos.crops[index, :2]) * (model.image_size / photos.crops[index, 2])
        # the fit is drawn over the truth: a truth point may be covered by a fitted one
        for points, colours in ((truth, (TRUTH_COLOUR, FIT_COLOUR)), (fitted[k], (FIT_COLOUR,))):
            inside = [p for p in points * scale if 2 <= p[0] < tile - 2 and 16 <= p[1] < tile - 2]
            drawn = [any(np.all(sheet[int(origin[1] + y), int(origin[0] + x)] == c) for c in colours)
                     for x, y in inside]
            assert np.mean(drawn) > 0.5, (k, colours)


def test_the_shipped_model_finds_turned_faces_whose_free_camera_is_implausible():
    """Three dev photos turned 64 to 96 degrees, whose free-camera fit by version 14 had an
    implausible camera (focal lengths of 0.2-0.8 widths; box NME 73-192%): the fallback on a fixed
    camera (``camera_fixed``) fits each, on average near the error of the [60, 90] bin (13-14%);
    version 19 fits them at 16, 29 and 21%."""
    from tfface.export import ExportedModel
    from tfface.reconstruct import DEFAULT_MODEL

    folder = shared_dir() / "data" / "aflw2000-3d-dev"
    if not folder.is_dir():
        pytest.skip(f"no AFLW2000-3D dev photos at {folder} (set TFFACE_SHARED)")
    model = ExportedModel(DEFAULT_MODEL)
    photos = load_aflw2000_dev(folder, model.image_size, limit=1000)
    photos = photos.subset(np.array([list(photos.names).index(name)
                                     for name in ("image00091", "image01633", "image02753")]))
    out = model(photos.images)
    np.testing.assert_array_equal(out["fit_valid"], 1.0)
    assert out["camera_fixed"].sum() >= 1
    errors = box_nme(photos.to_photo(out["landmarks68"]), photos.annotations["landmarks68"])
    assert np.all(errors < 0.35) and errors.mean() < 0.25, errors


def test_keras_runner_keeps_its_model_alive(default_uv_model):
    # The compiled inference holds the model weakly; a runner whose caller dropped the model
    # (as tools/placement_probe.py's runner_of does) must still run it.
    model = build_model(default_uv_model, CONFIGS["tiny"])
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    # The network's maps: an untrained network's fit of noise is too ill-conditioned to compare.
    expected = model.infer(images.astype(np.float32) / 255.0)["correspondence"].numpy()
    run = keras_runner(model)
    del model
    gc.collect()
    np.testing.assert_allclose(run(images)["correspondence"], expected, rtol=1e-4, atol=1e-5)
