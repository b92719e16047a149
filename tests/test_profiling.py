"""Face profiling: turns, and turned photos that agree with their target maps."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from tfface.errors import InputError
from tfface.geometry.camera import project
from tfface.training.pretraining import pretraining_dataset, pretraining_targets
from tfface.training.profiling import (DISTANCE, SURROUND_EDGE, FaceProfiler, FitProfiler, fitted_yaw,
                                       mirrored_beyond_edges, turn_matrices)
from tfface.training.self_labels import fit_maps_of

SIZE = 64
TEMPLATE5 = np.array([[0.35, 0.31], [0.65, 0.31], [0.5, 0.45], [0.39, 0.63], [0.61, 0.63]], np.float32) * SIZE


def test_turns_are_rotations_about_the_vertical_then_across():
    yaw, pitch = np.radians([90.0, 0.0, 30.0]), np.radians([0.0, 90.0, -20.0])
    rotations = turn_matrices(tf.constant(yaw, tf.float32), tf.constant(pitch, tf.float32)).numpy()
    for rotation in rotations:
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(rotations[0] @ [0, 0, 1], [1, 0, 0], atol=1e-6)  # the front turns sideways
    np.testing.assert_allclose(rotations[0] @ [0, 1, 0], [0, 1, 0], atol=1e-6)  # yaw keeps up
    np.testing.assert_allclose(rotations[1] @ [0, 1, 0], [0, 0, 1], atol=1e-6)  # pitch tips up forward


def test_uncovered_face_pixels_are_mirrored_across_the_nearer_edge():
    region = np.zeros((2, 3, 8), bool)
    region[0, 1, 2:6] = True  # row 1's face spans pixels 2-5, edges at x = 2 and 6
    region[1, 2, [1, 2, 5, 6]] = True  # a hole in the run (an eye) is mirrored as the run is
    positions = mirrored_beyond_edges(tf.constant(region)).numpy()
    assert positions.shape == (2, 3, 8, 2)
    np.testing.assert_allclose(positions[0, 1, 2:6, 0], [1.5, 0.5, 7.5, 6.5])
    np.testing.assert_allclose(positions[1, 2, 1:7, 0], [0.5, -0.5, -1.5, 9.5, 8.5, 7.5])
    np.testing.assert_allclose(positions[0, 0, :, 0], np.arange(8) + 0.5)  # outside: themselves
    np.testing.assert_allclose(positions[1, 2, [0, 7], 0], [0.5, 7.5])
    np.testing.assert_allclose(positions[..., 1], np.broadcast_to(np.arange(3)[None, :, None] + 0.5, (2, 3, 8)))


def test_no_second_face_beside_the_turned_one(profiler):
    photo = np.zeros((1, SIZE, SIZE, 3), np.float32)
    photo[..., 0] = profiler.frontal_region.numpy()[..., 0]  # the aligned photo: a red face on black
    image, maps = (a.numpy()[0] for a in profiler(photo, [np.radians(60.0)], [0.0]))
    uncovered = (profiler.frontal_region.numpy()[..., 0] > 0) & (maps[..., 3] == 0)
    assert uncovered.sum() > 20
    assert image[uncovered, 0].max() < 0.5  # filled from beyond the face's edges, not left red


@pytest.fixture(scope="module")
def profiler(default_uv_model):
    return FaceProfiler(default_uv_model, TEMPLATE5, SIZE)


def test_unturned_photo_keeps_its_pixels_and_gets_the_frontal_target(default_uv_model, profiler):
    photo = np.random.default_rng(1).uniform(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    image, maps = (a.numpy()[0] for a in profiler(photo, [0.0], [0.0]))
    frontal = pretraining_targets(default_uv_model, TEMPLATE5, SIZE).maps
    face = maps[..., 3] > 0
    np.testing.assert_array_equal(face, frontal[..., 3] > 0)  # supplement F's face region
    np.testing.assert_allclose(maps[face, :2], frontal[face, :2], atol=1e-4)
    # each face pixel samples itself: perspective-correct barycentrics blend projected positions
    # to within a few thousandths of a pixel of its centre, on noise that changes by up to 1 per pixel
    np.testing.assert_allclose(image, photo[0], atol=0.01)
    depth = maps[face, 2]  # camera Z / distance: about 1, the nose nearer than the cheeks
    assert 0.85 < depth.min() < 0.97 and 0.99 < depth.max() < 1.15


@pytest.mark.parametrize("yaw, pitch", [(40.0, 0.0), (-60.0, 10.0)])
def test_turned_photo_and_maps_agree_on_where_a_surface_point_went(default_uv_model, profiler, yaw, pitch):
    model = default_uv_model.model
    nose = int(model.landmarks68[30])  # nose tip vertex
    K, R, t = (a.numpy() for a in profiler.camera)
    frontal, _ = project(model.mean[None, nose:nose + 1].astype(np.float32), K[None], R[None], t[None])
    photo = np.zeros((1, SIZE, SIZE, 3), np.float32)
    x, y = np.floor(frontal.numpy()[0, 0]).astype(int)
    photo[0, y - 1:y + 2, x - 1:x + 2] = 1.0  # a white spot on the nose tip of the aligned photo
    image, maps = (a.numpy()[0] for a in profiler(photo, [np.radians(yaw)], [np.radians(pitch)]))
    rotation = turn_matrices(tf.constant([np.radians(yaw)], tf.float32), tf.constant([np.radians(pitch)], tf.float32))
    centre = model.mean.mean(0)
    turned = (rotation.numpy()[0] @ (model.mean[nose] - centre) + centre).astype(np.float32)
    expected, _ = project(turned[None, None], K[None], R[None], t[None])
    spot = np.argwhere(image[..., 0] > 0.5)[:, ::-1] + 0.5
    assert len(spot) > 0
    np.testing.assert_allclose(spot.mean(0), expected.numpy()[0, 0], atol=1.5)  # the spot moved with the nose
    at = tuple(np.floor(expected.numpy()[0, 0]).astype(int)[::-1])
    np.testing.assert_allclose(maps[at][:2], default_uv_model.vertex_uv[nose], atol=0.03)  # and so did its target
    assert maps[at][3] == 1.0 and abs(maps[at][2] - (K @ (R @ turned + t))[2] / DISTANCE) < 0.02


def test_profiled_pretraining_batches_move_image_and_maps_together(default_uv_model, profiler):
    targets = pretraining_targets(default_uv_model, TEMPLATE5, SIZE)
    white = tf.data.Dataset.from_tensors(tf.ones([SIZE, SIZE, 3])).repeat()
    images, maps = next(iter(pretraining_dataset(white, targets, 8, seed=2, profiler=profiler,
                                                 max_turn=(np.radians(60.0), np.radians(15.0)))))
    regions = maps.numpy()[..., 3]
    assert images.shape == (8, SIZE, SIZE, 3) and maps.shape == (8, SIZE, SIZE, 4)
    assert len({round(float(r.sum())) for r in regions}) == 8  # eight different turns (and similarities)
    left = regions[:, :, : SIZE // 2].sum(axis=(1, 2)) / regions.sum(axis=(1, 2))
    assert left.min() < 0.4 and left.max() > 0.6  # turned both ways


def test_landmark_box_framing_puts_the_turned_box_where_the_frontal_box_is(default_uv_model, profiler):
    framed = FaceProfiler(default_uv_model, TEMPLATE5, SIZE, framing="landmark_box")
    yaw, pitch = np.radians([0.0, 45.0, -70.0]), np.radians([0.0, 10.0, -15.0])
    transforms = framed.framing_transforms(yaw, pitch).numpy()
    np.testing.assert_allclose(transforms[0], np.eye(3), atol=1e-5)  # an unturned face stays put
    np.testing.assert_allclose(profiler.framing_transforms(yaw, pitch).numpy(), np.tile(np.eye(3), (3, 1, 1)))
    model = default_uv_model.model
    K, R, t = (a.numpy() for a in framed.camera)

    def box(points):  # centre and longer side, computed independently of the profiler
        return (points.min(0) + points.max(0)) / 2, (points.max(0) - points.min(0)).max()

    frontal, _ = project(model.mean[None, model.landmarks68].astype(np.float32), K[None], R[None], t[None])
    frontal_centre, frontal_side = box(frontal.numpy()[0])
    centre = model.mean.mean(0)
    for k in (1, 2):
        rotation = turn_matrices(tf.constant(yaw[k:k + 1], tf.float32),
                                 tf.constant(pitch[k:k + 1], tf.float32)).numpy()[0]
        turned = ((model.mean[model.landmarks68] - centre) @ rotation.T + centre).astype(np.float32)
        pixels = project(turned[None], K[None], R[None], t[None])[0].numpy()[0]
        moved_centre, moved_side = box(pixels @ transforms[k, :2, :2].T + transforms[k, :2, 2])
        assert abs(box(pixels)[0][0] - frontal_centre[0]) > 0.03 * SIZE  # the turn moved the box sideways
        np.testing.assert_allclose(moved_centre, frontal_centre, atol=1e-3 * SIZE)
        assert moved_side == pytest.approx(frontal_side, rel=1e-4)


def test_landmark_box_framing_moves_image_and_maps_together(default_uv_model, profiler):
    framed = FaceProfiler(default_uv_model, TEMPLATE5, SIZE, framing="landmark_box")
    targets = pretraining_targets(default_uv_model, TEMPLATE5, SIZE)
    photo = np.zeros((SIZE, SIZE, 3), np.float32)
    photo[..., 0] = framed.frontal_region.numpy()[..., 0]  # a red face on black

    def first_batch(chosen):
        return next(iter(pretraining_dataset(tf.data.Dataset.from_tensors(photo).repeat(), targets, 8, seed=3,
                                             profiler=chosen, max_turn=(np.radians(60.0), 0.0))))

    images, maps = first_batch(framed)
    red, region = images.numpy()[..., 0] > 0.5, maps.numpy()[..., 3] > 0.5
    for r, f in zip(red, region):  # the turned face and its target region cover the same pixels
        assert (r & f).sum() > 0.9 * f.sum()
    unframed = first_batch(profiler)[1].numpy()[..., 3] > 0.5  # the same turns and similarities
    moved = [(f ^ u).sum() / f.sum() for f, u in zip(region, unframed)]
    assert max(moved) > 0.1  # the framing moved the turned faces


def test_profiling_framing_must_be_known(default_uv_model):
    with pytest.raises(InputError, match="framing"):
        FaceProfiler(default_uv_model, TEMPLATE5, SIZE, framing="box")


def _render_mean_face(default_uv_model, profiler, yaw: float, lighting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean face turned by ``yaw`` (degrees) about its centroid, grey albedo 0.5, under the
    ``(9, 3)`` SH ``lighting``, at the template placement: ``(S, S, 3)`` image and ``(S, S)`` mask."""
    from tfface.render.shader import render

    model = default_uv_model.model
    rotation = turn_matrices(tf.constant([np.radians(yaw)], tf.float32), tf.constant([0.0], tf.float32)).numpy()[0]
    centre = model.mean.mean(0)
    vertices = ((model.mean - centre) @ rotation.T + centre).astype(np.float32)[None]
    albedo = np.full(vertices.shape, 0.5, np.float32)
    K, R, t = (a.numpy()[None] for a in profiler.camera)
    rendering = render(vertices, model.triangles, albedo, K, R, t, lighting[None].astype(np.float32), SIZE, SIZE)
    return rendering.image.numpy()[0], rendering.fragments.mask.numpy()[0]


def test_relighting_turns_the_shading_with_the_face_under_the_photos_light(default_uv_model):
    relighting = FaceProfiler(default_uv_model, TEMPLATE5, SIZE, relight=True)
    lighting = np.zeros((9, 3))
    lighting[0] = 3.0  # ambient
    lighting[3] = -0.9  # light from the face's side (x): one cheek lit, the other in shadow
    lighting[2] = 0.3
    photo, _ = _render_mean_face(default_uv_model, relighting, 0.0, lighting)
    expected, mask = _render_mean_face(default_uv_model, relighting, 50.0, lighting)
    inner = mask * np.roll(mask, 2, 0) * np.roll(mask, -2, 0) * np.roll(mask, 2, 1) * np.roll(mask, -2, 1) > 0
    relit, maps = (a.numpy()[0] for a in relighting(photo[None], [np.radians(50.0)], [0.0]))
    plain_profiler = FaceProfiler(default_uv_model, TEMPLATE5, SIZE)
    plain, _ = (a.numpy()[0] for a in plain_profiler(photo[None], [np.radians(50.0)], [0.0]))
    assert np.array_equal(maps[..., 3] > 0, mask > 0)
    relit_error = np.median(np.abs(relit - expected)[inner])
    plain_error = np.median(np.abs(plain - expected)[inner])
    # the turned face's shading is the turned render's, to the interpolation of the ratio across
    # triangles (the median: where the turn magnifies a strip the photo saw at a grazing angle, its
    # colour is blurred with or without relighting); without relighting the face keeps the photo's
    # shading, the lit cheek lit where it turned away from the light
    assert relit_error < 0.003 and plain_error > 10 * relit_error
    unturned, _ = (a.numpy()[0] for a in relighting(photo[None], [0.0], [0.0]))
    np.testing.assert_allclose(unturned, photo, atol=0.01)  # no turn, no change


def test_relighting_keeps_an_evenly_lit_face(default_uv_model):
    photo = np.random.default_rng(3).uniform(0.2, 0.8, (1, SIZE, SIZE, 3)).astype(np.float32)
    relit, _ = FaceProfiler(default_uv_model, TEMPLATE5, SIZE, relight=True)(photo, [np.radians(60.0)], [0.0])
    plain, _ = FaceProfiler(default_uv_model, TEMPLATE5, SIZE)(photo, [np.radians(60.0)], [0.0])
    # noise has no direction to its light: the ratios stay near 1
    assert np.abs(relit.numpy() - plain.numpy()).mean() < 0.02


def _fit_of(default_uv_model, profiler, vertices: np.ndarray, maps_size: int = SIZE) -> dict[str, tf.Tensor]:
    """A fit of ``(V, 3)`` vertices under the template camera, as self-labels keep it: the inverse
    camera of ``d x = K (R X + t)`` is ``P_hat = (K R)^-1``, ``q_hat = -R^T t``."""
    K, R, t = (a.numpy() for a in profiler.camera)
    fit = {"vertices": vertices[None].astype(np.float32), "p_hat": np.linalg.inv(K @ R)[None].astype(np.float32),
           "q_hat": (-R.T @ t)[None].astype(np.float32), "R": R[None].astype(np.float32)}
    model = default_uv_model.model
    fit["maps"] = fit_maps_of(fit["vertices"], fit["p_hat"], fit["q_hat"], model.triangles,
                              default_uv_model.vertex_uv, maps_size)
    return {key: tf.constant(value) for key, value in fit.items()}


def _own_shape(default_uv_model) -> np.ndarray:
    """A face that is not the mean: two shape and one expression coefficient set (mm)."""
    model = default_uv_model.model
    return model.mean + 2.5 * model.shape_basis[0] - 2.0 * model.shape_basis[2] + 1.5 * model.expression_basis[0]


def _turned(R: np.ndarray, vertices: np.ndarray, yaw: float, pitch: float = 0.0) -> np.ndarray:
    """``vertices`` turned about their centroid by ``yaw`` and ``pitch`` (degrees) about the axes
    of the camera whose rotation is ``R``."""
    turn = turn_matrices(tf.constant([np.radians(yaw)], tf.float32), tf.constant([np.radians(pitch)], tf.float32))
    centre = vertices.mean(0)
    return ((vertices - centre) @ (R.T @ turn.numpy()[0] @ R).T + centre).astype(np.float32)


def test_an_unturned_fit_keeps_its_photo_maps_and_place(default_uv_model, profiler):
    vertices = _own_shape(default_uv_model)
    fit = _fit_of(default_uv_model, profiler, vertices)
    photo = np.random.default_rng(4).uniform(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    image, maps, framing = FitProfiler(default_uv_model, SIZE, relight=True)(photo, fit, [0.0], [0.0])
    np.testing.assert_allclose(maps.numpy(), fit["maps"].numpy(), rtol=1e-5, atol=1e-5)  # the fit's own labels
    np.testing.assert_allclose(image.numpy(), photo, atol=0.01)  # each face pixel samples itself
    np.testing.assert_allclose(framing.numpy()[0], np.eye(3), atol=1e-5)
    assert np.degrees(fitted_yaw(fit["R"]).numpy()[0]) < 3.0  # the template camera looks at the face


@pytest.mark.parametrize("yaw, pitch", [(50.0, 0.0), (-35.0, 12.0)])
def test_a_turned_fit_is_its_own_face_turned_under_the_photos_light(default_uv_model, profiler, yaw, pitch):
    """The photo: the fit's own (not the mean) shape, grey albedo, lit from one side. Turned, its
    image is the render of the turned shape under the same light, and its maps are the turned
    fit's exact maps."""
    from tfface.render.shader import render

    model = default_uv_model.model
    lighting = np.zeros((9, 3), np.float32)
    lighting[0], lighting[3], lighting[2] = 3.0, -0.9, 0.3
    K, R, t = (a.numpy()[None] for a in profiler.camera)

    def rendered(vertices):
        out = render(vertices[None], model.triangles, np.full((1,) + vertices.shape, 0.5, np.float32), K, R, t,
                     lighting[None], SIZE, SIZE)
        return out.image.numpy()[0], out.fragments.mask.numpy()[0]

    vertices = _own_shape(default_uv_model).astype(np.float32)
    photo, _ = rendered(vertices)
    turned = _turned(R[0], vertices, yaw, pitch)
    expected, mask = rendered(turned)
    fit = _fit_of(default_uv_model, profiler, vertices)
    image, maps, _ = (a.numpy()[0] for a in FitProfiler(default_uv_model, SIZE, relight=True)(
        photo[None], fit, [np.radians(yaw)], [np.radians(pitch)]))
    turned_maps = _fit_of(default_uv_model, profiler, turned)["maps"].numpy()[0]
    np.testing.assert_allclose(maps, turned_maps, rtol=1e-5, atol=1e-5)
    inner = mask * np.roll(mask, 2, 0) * np.roll(mask, -2, 0) * np.roll(mask, 2, 1) * np.roll(mask, -2, 1) > 0
    plain, _, _ = (a.numpy()[0] for a in FitProfiler(default_uv_model, SIZE)(
        photo[None], fit, [np.radians(yaw)], [np.radians(pitch)]))
    relit_error, plain_error = (np.median(np.abs(a - expected)[inner]) for a in (image, plain))
    assert relit_error < 0.003 and plain_error > 5 * relit_error  # the relighting turns the shading too


def test_a_turned_fit_is_framed_by_its_landmark_box(default_uv_model, profiler):
    vertices = _own_shape(default_uv_model).astype(np.float32)
    fit = _fit_of(default_uv_model, profiler, vertices)
    _, _, framing = FitProfiler(default_uv_model, SIZE)(np.zeros((1, SIZE, SIZE, 3), np.float32), fit,
                                                        [np.radians(-60.0)], [np.radians(10.0)])
    K, R, t = (a.numpy() for a in profiler.camera)
    landmarks = default_uv_model.model.landmarks68

    def box(points):
        return (points.min(0) + points.max(0)) / 2, (points.max(0) - points.min(0)).max()

    before = project(vertices[None, landmarks], K[None], R[None], t[None])[0].numpy()[0]
    after = project(_turned(R, vertices, -60.0, 10.0)[None, landmarks], K[None], R[None], t[None])[0].numpy()[0]
    transform = framing.numpy()[0]
    assert abs(box(after)[0][0] - box(before)[0][0]) > 0.03 * SIZE  # the turn moved the box
    framed = after @ transform[:2, :2].T + transform[:2, 2]
    np.testing.assert_allclose(box(framed)[0], box(before)[0], atol=1e-3 * SIZE)
    assert box(framed)[1] == pytest.approx(box(before)[1], rel=1e-4)


def _position_photo() -> np.ndarray:
    """A ``(1, SIZE, SIZE, 3)`` photo whose colour is its own pixel position: red x / SIZE, green
    y / SIZE, so that a turned photo's colours say where each of its pixels was sampled."""
    centres = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE
    x, y = np.meshgrid(centres, centres)
    return np.stack([x, y, np.full_like(x, 0.5)], -1)[None]


def test_turned_surroundings_continue_the_face_into_its_own_photo(default_uv_model, profiler):
    """With ``surroundings="turned"`` an unturned fit keeps its whole photo. Turned, the pixels its
    face leaves behind come from just beyond the face's outline in the photo (the ``mirrored`` fill
    reaches 5 to 13 pixels beyond it), no pixel beside the turned face shows the photo's face, and
    the photo's corners, far from the face, stay put."""
    fit = _fit_of(default_uv_model, profiler, _own_shape(default_uv_model).astype(np.float32))
    photo = _position_photo()
    image, _, _ = FitProfiler(default_uv_model, SIZE, surroundings="turned")(photo, fit, [0.0], [0.0])
    np.testing.assert_allclose(image.numpy(), photo, atol=1e-3)  # to 0.06 pixels

    region = fit["maps"].numpy()[0, ..., 3] > 0.5
    outside, inside = ndimage.distance_transform_edt(~region), ndimage.distance_transform_edt(region)
    pixels = (np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE)), -1) + 0.5).astype(np.float32)
    corners = np.zeros((SIZE, SIZE), bool)
    corners[:3, :3] = corners[:3, -3:] = corners[-3:, :3] = corners[-3:, -3:] = True
    for yaw, pitch in [(60.0, 0.0), (-45.0, 10.0), (30.0, -10.0)]:
        beyond = {}
        for surroundings in ("turned", "mirrored"):
            image, maps, _ = FitProfiler(default_uv_model, SIZE, surroundings=surroundings)(
                photo, fit, [np.radians(yaw)], [np.radians(pitch)])
            source = image.numpy()[0, ..., :2] * SIZE  # where each pixel was sampled from
            mask = maps.numpy()[0, ..., 3] > 0.5
            x, y = np.clip(np.floor(source), 0, SIZE - 1).astype(int).transpose(2, 0, 1)
            assert inside[y, x][~mask].max() < SURROUND_EDGE + 1.5  # no second face: at most its rim
            left_behind = ndimage.binary_dilation(mask, iterations=2) & ~mask & region
            beyond[surroundings] = outside[y, x][left_behind]
        assert np.median(beyond["turned"]) <= 1.0 and np.percentile(beyond["turned"], 75) <= 1.5, yaw
        assert np.median(beyond["mirrored"]) >= 5.0
        np.testing.assert_allclose(source[corners], pixels[corners], atol=0.5)


def test_surroundings_must_be_known(default_uv_model):
    with pytest.raises(InputError, match="surroundings"):
        FitProfiler(default_uv_model, SIZE, surroundings="blurred")
