"""``tfface uv3dmm build``: writes a loadable UV-3DMM and a preview panel; bad input is one clear line."""

from __future__ import annotations

import numpy as np
from conftest import grid_mesh, toy_model
from PIL import Image

from tfface.cli import main
from tfface.morphable.loaders import save_model
from tfface.morphable.preview import CAPTION
from tfface.morphable.uv3dmm import UVMorphableModel


def test_build_writes_uv3dmm_and_preview(tmp_path, capsys):
    model = toy_model(*grid_mesh(10, hole=(3, 6, 4, 6)))
    save_model(model, tmp_path / "toy.npz")
    status = main(["uv3dmm", "build", "--model", str(tmp_path / "toy.npz"), "--out", str(tmp_path / "uv.npz"),
                   "--resolution", "48", "--preview", str(tmp_path / "preview.png")])
    assert status == 0
    uv_model = UVMorphableModel.load(tmp_path / "uv.npz")
    assert uv_model.resolution == 48 and uv_model.num_original_vertices == model.num_vertices
    np.testing.assert_array_equal(uv_model.model.mean[: model.num_vertices], model.mean)
    panel = np.asarray(Image.open(tmp_path / "preview.png"))
    # 9 tiles (mean, 3 identity, 1 expression, albedo mean and +-2 sd, wireframe) in 4 columns.
    assert panel.shape == (3 * (48 + CAPTION), 4 * 48, 3)
    assert panel[:48, :48].std() > 10  # the mean-shape tile is not blank
    assert "wrote" in capsys.readouterr().out


def test_bad_model_file_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "bad.h5").write_bytes(b"not a model at all")
    status = main(["uv3dmm", "build", "--model", str(tmp_path / "bad.h5"), "--out", str(tmp_path / "uv.npz")])
    assert status == 2
    assert "not a morphable model" in capsys.readouterr().err
    assert not (tmp_path / "uv.npz").exists()
