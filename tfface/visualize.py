"""The overlay panel of a reconstruction (supplement H Fig. 13, K Fig. 17, O video layout).

Six tiles, two rows::

    input            | reconstruction          | geometry (shaded)
    correspondence   | depth                   | confidence

* reconstruction: the fitted face rendered with its albedo and the fitted inverse-SH lighting
  (pixel = albedo / inverse shading, in the softplus-preprocessed space of supplement E, shown
  through the inverse softplus) composited over the input;
* geometry: the fitted mesh, grey, lit from the camera, over the dimmed input;
* correspondence: (u, v) as red and green, faded by the geometric confidence;
* depth: the predicted depth where confidence > 0.5, near bright, normalised per image;
* confidence: geometric confidence, black 0 to white 1.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from tfface.geometry.normals import vertex_normals
from tfface.geometry.sh import sh_basis
from tfface.layers.photometric import MIN_INVERSE_SHADING
from tfface.layers.preprocessing import inverse_softplus_preprocess
from tfface.render.rasterizer import interpolate, rasterize

#: Tile titles in panel order (row-major, 3 per row).
TILES = ("input", "reconstruction", "geometry", "correspondence", "depth", "confidence")


def render_face(vertices: np.ndarray, triangles: np.ndarray, albedo: np.ndarray, K: np.ndarray, R: np.ndarray,
                t: np.ndarray, lighting: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Render one fitted face at ``size x size``.

    Args:
        vertices: ``(V, 3)`` mm; triangles: ``(T, 3)``; albedo: ``(V, 3)`` in [0, 1].
        K, R, t: camera of the model input (pixels of the ``size x size`` image).
        lighting: ``(3, 9)`` inverse-SH coefficients per channel (camera-space normals).

    Returns:
        ``colour`` (size, size, 3) display RGB in [0, 1], ``grey`` (size, size) shaded geometry
        in [0, 1] and ``mask`` (size, size) float.
    """
    batch = [tf.constant(np.asarray(a, np.float32)[None]) for a in (vertices, albedo, K, R, t)]
    vertices_b, albedo_b, K_b, R_b, t_b = batch
    triangles = tf.constant(np.asarray(triangles, np.int32))
    fragments = rasterize(vertices_b, triangles, K_b, R_b, t_b, size, size)
    normals = tf.matmul(vertex_normals(vertices_b, triangles), R_b, transpose_b=True)
    pixels = interpolate(tf.concat([albedo_b, normals], -1), triangles, fragments)[0].numpy()
    mask = fragments.mask[0].numpy()
    unit = pixels[..., 3:] / np.maximum(np.linalg.norm(pixels[..., 3:], axis=-1, keepdims=True), 1e-12)
    inverse_shading = sh_basis(tf.constant(unit)).numpy() @ np.asarray(lighting, np.float32).T  # (H, W, 3)
    preprocessed = pixels[..., :3] / np.maximum(inverse_shading, MIN_INVERSE_SHADING)
    colour = np.clip(inverse_softplus_preprocess(tf.constant(np.maximum(preprocessed, 1e-6))).numpy(), 0, 1)
    grey = np.clip(0.15 + 0.85 * np.maximum(-unit[..., 2], 0.0), 0, 1)  # camera looks along +Z
    return {"colour": colour * mask[..., None], "grey": grey * mask, "mask": mask}


def _tile(array: np.ndarray, size: int, title: str) -> Image.Image:
    image = Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 7 * len(title) + 6, 14], fill=(0, 0, 0))
    draw.text((3, 1), title, fill=(255, 255, 255))
    return image


def panel(image: np.ndarray, outputs: dict[str, np.ndarray], index: int, triangles: np.ndarray,
          face_detected: bool, tile_size: int = 256) -> np.ndarray:
    """The ``(2 tile_size, 3 tile_size, 3)`` uint8 panel of image ``index`` of a batch.

    Args:
        image: ``(S, S, 3)`` uint8, the model input.
        outputs: exported-model outputs (:data:`tfface.export.OUTPUT_DOCS`).
        index: image index in ``outputs``.
        triangles: ``(T, 3)`` of the exported mesh.
        face_detected: when False the two render tiles show the dimmed input marked "no face".
        tile_size: side of each tile in pixels.
    """
    size = image.shape[0]
    base = image.astype(np.float32) / 255.0
    confidence = outputs["confidence"][index][..., 0]
    if face_detected:
        face = render_face(outputs["vertices"][index], triangles, outputs["vertex_albedo"][index], outputs["K"][index],
                           outputs["R"][index], outputs["t"][index], outputs["lighting"][index], size)
        mask = face["mask"][..., None]
        reconstruction = face["colour"] * mask + base * (1 - mask)
        geometry = face["grey"][..., None] * mask + 0.4 * base * (1 - mask)
    else:
        reconstruction = geometry = 0.4 * base
    uv = outputs["correspondence"][index]
    correspondence = np.dstack([uv, np.zeros_like(uv[..., :1])]) * confidence[..., None]
    depth = outputs["depth"][index]
    region = confidence > 0.5
    near, far = np.percentile(depth[region] if region.any() else depth, [1, 99])
    depth_image = np.where(region, np.clip((far - depth) / max(far - near, 1e-6), 0, 1) * 0.8 + 0.2, 0.0)
    grey = lambda a: np.repeat(a[..., None], 3, axis=-1)
    arrays = (base, reconstruction, geometry, correspondence, grey(depth_image), grey(confidence))
    titles = list(TILES) if face_detected else ["input", "no face", "no face", *TILES[3:]]
    tiles = [_tile(a, tile_size, t) for a, t in zip(arrays, titles)]
    canvas = Image.new("RGB", (3 * tile_size, 2 * tile_size))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, ((i % 3) * tile_size, (i // 3) * tile_size))
    return np.asarray(canvas)
