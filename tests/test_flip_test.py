"""The flip test: mirror partners of the mesh, mirrored correspondences, map fusion, the model's use."""

import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import ModelFileError
from tfface.flip_test import fuse_maps, mirror_maps
from tfface.layers.uv_sampling import UVSampling
from tfface.model import FaceModel
from tfface.morphable.symmetry import mirror_partners
from tfface.render.rasterizer import interpolate, rasterize
from tfface.training.config import CONFIGS
from test_export import toy_camera

#: The iBUG 68-point mark-up seen in a mirror: jaw, brows, nose, eyes and mouth reversed.
IBUG_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
SIZE = 64


def test_mirror_partners_of_the_default_model_pair_left_and_right(default_uv_model):
    model = default_uv_model.model
    partners = mirror_partners(model.mean)
    np.testing.assert_array_equal(partners[partners], np.arange(model.num_vertices))
    np.testing.assert_array_equal(partners[model.landmarks68], model.landmarks68[IBUG_MIRROR])
    reflected = model.mean[partners] * [-1.0, 1.0, 1.0]
    np.testing.assert_allclose(reflected, model.mean, atol=0.06)  # the ICT face is symmetric to 0.05 mm


def test_an_asymmetric_or_malformed_mean_has_no_mirror_partners(toy_uv_model):
    # The toy grid's hole spans columns 4-6 of 0-11: its mirror image (5-7) is not the hole.
    with pytest.raises(ModelFileError, match="not left-right symmetric"):
        mirror_partners(toy_uv_model.model.mean)
    with pytest.raises(ModelFileError, match=r"\(V, 3\)"):
        mirror_partners(np.zeros((5, 2)))
    with pytest.raises(ModelFileError, match="not left-right symmetric"):
        FaceModel(toy_uv_model, CONFIGS["tiny"].replace(inference_flip_test=True))


def rendered_vertex_values(uv_model, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex ``values`` (V, R) of the mean face rendered at 64 px turned by 20 degrees, and the face mask."""
    mesh = uv_model.model
    K, R, t = (part[None].astype(np.float32) for part in toy_camera(150.0, (SIZE / 2, SIZE / 2), 20.0, (0, 0, 600)))
    fragments = rasterize(mesh.mean[None], mesh.triangles, K, R, t, SIZE, SIZE)
    return (interpolate(tf.constant(values, tf.float32), mesh.triangles, fragments).numpy()[0],
            fragments.mask.numpy()[0] > 0)


def test_mirrored_correspondence_is_the_rendered_partners_correspondence(default_uv_model):
    """At every pixel of a rendered face, the correspondence sent through the partners equals the
    rendering of the partners' UVs: the same triangle, the same barycentrics."""
    partner_uv = default_uv_model.vertex_uv[mirror_partners(default_uv_model.model.mean)]
    uv, face = rendered_vertex_values(default_uv_model, default_uv_model.vertex_uv)
    expected, _ = rendered_vertex_values(default_uv_model, partner_uv)
    assert face.sum() > 1000
    layer = UVSampling.from_uv_model(default_uv_model)
    mirrored, valid = layer.interpolate(tf.constant(uv[face][None]), tf.constant(partner_uv))
    assert valid.numpy().all()
    np.testing.assert_allclose(mirrored.numpy()[0], expected[face], atol=2e-5)
    # The Tutte embedding fills the unit square: only points off it lie outside the mesh.
    outside, outside_valid = layer.interpolate(tf.constant([[[-0.5, 0.5], [2.0, 0.5]]]), tf.constant(partner_uv))
    np.testing.assert_array_equal(outside_valid.numpy(), [[0.0, 0.0]])
    np.testing.assert_array_equal(outside.numpy(), 0.0)


def test_mirror_maps_flips_back_and_sends_each_correspondence_to_its_partner():
    rng = np.random.default_rng(0)
    maps = tf.constant(rng.uniform(0.0, 1.0, (2, 4, 6, 5)), tf.float32)

    def partner(uv):  # a mirror of the UV square about u = 0.5, valid for v < 0.5 only
        return tf.stack([1.0 - uv[..., 0], uv[..., 1]], -1), tf.cast(uv[..., 1] < 0.5, tf.float32)

    result = mirror_maps(maps, partner).numpy()
    flipped = maps.numpy()[:, :, ::-1]
    valid = flipped[..., 1:2] < 0.5
    np.testing.assert_allclose(result[..., 0], 1.0 - flipped[..., 0], atol=1e-7)
    np.testing.assert_allclose(result[..., 1:3], flipped[..., 1:3])
    np.testing.assert_allclose(result[..., 3:5], np.where(valid, flipped[..., 3:5], 0.0))


def test_fuse_maps_weighs_geometry_by_geometric_confidence():
    def maps(u, v, depth, geometric, photometric):
        return tf.constant([[[[u, v, depth, geometric, photometric]]]], tf.float32)

    fused = fuse_maps(maps(0.2, 0.4, 1.0, 0.75, 0.5), maps(0.6, 0.8, 3.0, 0.25, 1.0)).numpy().ravel()
    np.testing.assert_allclose(fused, [0.3, 0.5, 1.5, 0.5, 0.75], atol=1e-6)
    one_sided = fuse_maps(maps(0.2, 0.4, 1.0, 0.0, 0.0), maps(0.6, 0.8, 3.0, 0.5, 1.0)).numpy().ravel()
    np.testing.assert_allclose(one_sided, [0.6, 0.8, 3.0, 0.25, 0.5], atol=1e-5)
    rng = np.random.default_rng(1)
    a, b = (tf.constant(rng.uniform(0.0, 1.0, (2, 3, 3, 5)), tf.float32) for _ in range(2))
    np.testing.assert_allclose(fuse_maps(a, b).numpy(), fuse_maps(b, a).numpy(), atol=1e-7)
    np.testing.assert_allclose(fuse_maps(a, a).numpy(), a.numpy(), atol=1e-6)


def test_inference_with_the_flip_test_fits_the_fused_maps(default_uv_model):
    config = CONFIGS["tiny"].replace(image_size=SIZE)
    plain = FaceModel(default_uv_model, config)
    flip = FaceModel(default_uv_model, config.replace(inference_flip_test=True))
    images = tf.constant(np.random.default_rng(2).uniform(0.0, 1.0, (2, SIZE, SIZE, 3)), tf.float32)
    plain(images), flip(images)
    flip.unet.set_weights(plain.unet.get_weights())
    partner_uv = tf.constant(default_uv_model.vertex_uv[mirror_partners(default_uv_model.model.mean)])
    mirrored = mirror_maps(plain.predict_maps(images[:, :, ::-1]),
                           lambda uv: plain.uv_sampling.interpolate(uv, partner_uv))
    expected = fuse_maps(plain.predict_maps(images), mirrored)
    np.testing.assert_allclose(flip.inference_maps(images).numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(plain.inference_maps(images).numpy(), plain.predict_maps(images).numpy())
    out = tf.function(flip.infer)(images)
    np.testing.assert_allclose(out["correspondence"].numpy(), expected.numpy()[..., 0:2], atol=1e-5)
    assert all(np.all(np.isfinite(value.numpy())) for value in out.values())
