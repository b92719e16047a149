"""A picture of a UV-3DMM for people: mean shape, basis vectors and albedo as UV images, plus the
embedding as a wireframe (visualisation only; nothing reads these images back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tfface.morphable.uv3dmm import UVMorphableModel

#: Height (pixels) of the caption strip under each tile.
CAPTION = 16


def _normalise(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-channel min-max over the valid texels to [0, 1]; invalid texels black."""
    inside = image[valid > 0]
    lo, hi = inside.min(axis=0), inside.max(axis=0)
    return np.where(valid[..., None] > 0, (image - lo) / np.maximum(hi - lo, 1e-12), 0.0)


def _signed(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Signed xyz offsets to RGB around grey: 0.5 + v / (2 max |v|)."""
    scale = np.abs(image[valid > 0]).max()
    return np.where(valid[..., None] > 0, 0.5 + image / (2 * max(scale, 1e-12)), 0.0)


def wireframe(uv_model: UVMorphableModel, size: int) -> np.ndarray:
    """``(size, size, 3)`` float image of the embedding's edges (auxiliary vertices' fans in red)."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    p = uv_model.vertex_uv.astype(np.float64) * (size - 1)
    triangles = uv_model.model.triangles
    aux = np.any(triangles >= uv_model.num_original_vertices, axis=1)
    for tris, colour in ((triangles[~aux], (40, 40, 40)), (triangles[aux], (220, 30, 30))):
        edges = np.unique(np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1), axis=0)
        for a, b in edges:
            draw.line([tuple(p[a]), tuple(p[b])], fill=colour, width=1)
    return np.asarray(image, np.float32) / 255.0


def preview_tiles(uv_model: UVMorphableModel) -> list[tuple[str, np.ndarray]]:
    """Captioned ``(S, S, 3)`` images in [0, 1]: geometry, three identity modes, one expression
    mode, albedo mean, albedo mean +- 2 sigma of the first albedo mode (:func:`albedo_tiles`),
    and the wireframe."""
    m = uv_model.model
    identity = list(range(min(3, m.num_shape)))
    expression = [m.num_shape] if m.num_expression else []
    dense = uv_model.dense_images(modes=identity + expression, albedo_modes=[0] if m.num_albedo else [])
    valid = dense["valid"]
    tiles = [("mean shape xyz", _normalise(dense["mean"], valid))]
    tiles += [(f"identity {i} (xyz)", _signed(dense["basis"][i], valid)) for i in identity]
    if expression:
        tiles.append(("expression 0 (xyz)", _signed(dense["basis"][-1], valid)))
    tiles += _albedo_tiles(dense)
    tiles.append(("Tutte embedding", wireframe(uv_model, uv_model.resolution)))
    return tiles


def _albedo_tiles(dense: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """The albedo mean, then mean -2 and +2 sd of each mode in ``dense["albedo_basis"]``
    (:meth:`UVMorphableModel.dense_images`), clipped to [0, 1]."""
    valid = dense["valid"][..., None]
    tiles = [("albedo mean", np.clip(dense["albedo_mean"], 0, 1) * valid)]
    for k, mode in enumerate(dense["albedo_basis"]):
        tiles += [(f"albedo {sign:+d} sd mode {k}", np.clip(dense["albedo_mean"] + sign * mode, 0, 1) * valid)
                  for sign in (-2, 2)]
    return tiles


def albedo_tiles(uv_model: UVMorphableModel, modes: int = 4) -> list[tuple[str, np.ndarray]]:
    """Captioned ``(S, S, 3)`` images of the colour model: albedo mean, then mean -2 and +2 sd of
    each of the first ``modes`` albedo modes."""
    count = min(modes, uv_model.model.num_albedo)
    return _albedo_tiles(uv_model.dense_images(modes=(), albedo_modes=range(count)))


def write_preview(uv_model: UVMorphableModel, path: str | Path, columns: int = 4) -> None:
    """Write the :func:`preview_tiles` as one captioned PNG panel."""
    write_panel(preview_tiles(uv_model), path, columns)


def write_panel(tiles: list[tuple[str, np.ndarray]], path: str | Path, columns: int = 4) -> None:
    """Write captioned square tiles ``(S, S, 3)`` in [0, 1], row by row, as one PNG panel."""
    s = tiles[0][1].shape[0]
    rows = -(-len(tiles) // columns)
    panel = Image.new("RGB", (columns * s, rows * (s + CAPTION)), "black")
    draw = ImageDraw.Draw(panel)
    for k, (caption, tile) in enumerate(tiles):
        x, y = (k % columns) * s, (k // columns) * (s + CAPTION)
        panel.paste(Image.fromarray((np.clip(tile, 0, 1) * 255).astype(np.uint8)), (x, y))
        draw.text((x + 4, y + s + 2), caption, fill="white")
    panel.save(path)
