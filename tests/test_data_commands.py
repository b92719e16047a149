"""``tfface data synth`` and ``tfface data sheet`` end to end, and the contact sheet drawing."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from tfface.data import commands
from tfface.data.sheet import DOT_COLOUR, contact_sheet
from tfface.data.tfrecords import read_spec, read_tfrecords
from tfface.errors import InputError, ModelFileError


def run(argv):
    parser = argparse.ArgumentParser(prog="tfface")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_synth_writes_shards_readable_back(tmp_path, capsys):
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(backgrounds / "a.png")
    (backgrounds / "broken.jpg").write_text("x")
    out = tmp_path / "synth"
    assert run(["data", "synth", "--count", "5", "--out", str(out), "--size", "48", "--shard-size", "2",
                "--backgrounds", str(backgrounds)]) == 0
    printed = capsys.readouterr()
    assert "1 unreadable skipped" in printed.out and "3 shards" in printed.out
    assert "5/5" in printed.err  # tqdm progress bar
    assert read_spec(out)["count"] == 5
    samples = list(read_tfrecords(out))
    assert len(samples) == 5
    assert samples[0]["image"].shape == (48, 48, 3) and samples[0]["landmarks68"].shape == (68, 2)
    assert all(s["mask"].numpy().sum() > 50 for s in samples)


def test_synth_rejects_bad_count(tmp_path):
    with pytest.raises(InputError):
        run(["data", "synth", "--count", "0", "--out", str(tmp_path)])


@pytest.mark.slow
def test_sheet_command_writes_png(tmp_path):
    out = tmp_path / "sheet.png"
    assert run(["data", "sheet", "--out", str(out), "--size", "32"]) == 0
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (128, 128, 3)
    assert (sheet == DOT_COLOUR).all(-1).sum() > 16 * 20  # landmarks drawn on every tile
    with pytest.raises(InputError):
        run(["data", "sheet", "--out", str(tmp_path / "sheet.jpg")])


def test_contact_sheet_layout_and_dots():
    images = np.stack([np.full((10, 12, 3), v, np.float32) for v in (0.2, 0.4, 0.6)])
    landmarks = np.array([[[3.5, 4.5]], [[8.5, 2.5]], [[6.5, 6.5]]])
    sheet = np.asarray(contact_sheet(images, landmarks, columns=2))
    assert sheet.shape == (20, 24, 3)
    assert tuple(sheet[0, 0]) == (51, 51, 51) and tuple(sheet[0, 23]) == (102, 102, 102)
    assert tuple(sheet[19, 23]) == (0, 0, 0)  # empty cell
    assert tuple(sheet[4, 3]) == DOT_COLOUR and tuple(sheet[2, 12 + 8]) == DOT_COLOUR
    assert tuple(sheet[10 + 6, 6]) == DOT_COLOUR
    with pytest.raises(InputError):
        contact_sheet(images, landmarks[:2])


@pytest.mark.slow
def test_synth_from_a_saved_uv_model(tmp_path):
    from tfface.morphable.loaders import load_default_model
    from tfface.morphable.uv3dmm import UVMorphableModel

    path = tmp_path / "model.uv3dmm.npz"
    UVMorphableModel.build(load_default_model()).save(path)
    out = tmp_path / "synth"
    assert run(["data", "synth", "--uv-model", str(path), "--count", "2", "--out", str(out), "--size", "32"]) == 0
    assert len(list(read_tfrecords(out))) == 2
    with pytest.raises(ModelFileError):
        run(["data", "synth", "--uv-model", str(tmp_path / "absent.npz"), "--count", "1", "--out", str(out)])
