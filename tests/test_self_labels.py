"""Self-labelled photos as pretraining examples (tfface.training.self_labels)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from scipy.spatial.transform import Rotation

from tfface.errors import InputError
from tfface.render.rasterizer import interpolate, rasterize
from tfface.training.config import CONFIGS
from tfface.training.pretraining import pretraining_dataset, pretraining_targets
from tfface.training.self_labels import (_labelled_arrays, fit_maps_of, label_photo_stream, label_photos,
                                         labelled_photos, turned_further)

SIZE = 32


def _squares(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` photos of a white square on black, each square elsewhere, labelled with maps
    whose face region is the square and whose u, v are the example's index / 10 and 0.5."""
    images = np.zeros((count, SIZE, SIZE, 3), np.uint8)
    maps = np.zeros((count, SIZE, SIZE, 4), np.float32)
    for i in range(count):
        top, left = 4 + 2 * i, 6 + 3 * i
        images[i, top:top + 12, left:left + 10] = 255
        maps[i, top:top + 12, left:left + 10] = [i / 10, 0.5, 1.0, 1.0]
    return images, maps


def _write(path, images, maps):
    np.savez(path, images=images, maps=maps.astype(np.float16))
    return path


def test_labelled_photos_load_as_unit_images_and_their_maps(tmp_path):
    images, maps = _squares(3)
    loaded = list(labelled_photos(_write(tmp_path / "labels.npz", images, maps), SIZE))
    assert len(loaded) == 3
    for example, image, target in zip(loaded, images, maps):
        np.testing.assert_allclose(example["image"].numpy(), image / 255.0)
        np.testing.assert_allclose(example["maps"].numpy(), target, atol=1e-3)  # stored as float16


def test_labelled_photos_are_read_once_until_the_file_changes(tmp_path):
    images, maps = _squares(3)
    path = _write(tmp_path / "labels.npz", images, maps)
    first = next(iter(labelled_photos(path, SIZE)))["image"].numpy()
    np.savez(tmp_path / "other.npz", images=255 - images, maps=maps)
    os.replace(tmp_path / "other.npz", path)  # a new file at the same path: read again
    os.utime(path, ns=(0, 0))
    again = next(iter(labelled_photos(path, SIZE)))["image"].numpy()
    np.testing.assert_allclose(again, 1.0 - first)
    hits = _labelled_arrays.cache_info().hits
    next(iter(labelled_photos(path, SIZE)))
    assert _labelled_arrays.cache_info().hits == hits + 1  # the unchanged file is not read again


def test_labelled_photos_refuse_missing_files_and_wrong_shapes(tmp_path):
    with pytest.raises(InputError, match="no self-labelled photos"):
        labelled_photos(tmp_path / "missing.npz", SIZE)
    images, maps = _squares(2)
    with pytest.raises(InputError, match="expected images"):
        labelled_photos(_write(tmp_path / "small.npz", images, maps), 64)
    with pytest.raises(InputError, match="expected images"):
        labelled_photos(_write(tmp_path / "three.npz", images, maps[..., :3]), SIZE)


def test_labelled_maps_move_with_their_own_photo(tmp_path):
    images, maps = _squares(4)
    photos = labelled_photos(_write(tmp_path / "labels.npz", images, maps), SIZE)
    augmented, targets = next(iter(pretraining_dataset(photos, None, 4, CONFIGS["photos"].pretraining_ranges(),
                                                       seed=5)))
    image, target = augmented.numpy(), targets.numpy()
    for i in range(4):
        square = image[i, ..., 0] > 0.5
        region = target[i, ..., 3] > 0.5
        assert np.mean(square == region) > 0.97  # image and maps under one similarity
        assert not np.array_equal(region, maps[i, ..., 3] > 0.5)  # which did move them
        np.testing.assert_allclose(target[i, ..., 0][target[i, ..., 3] > 0.999], i / 10, atol=1e-3)


def test_pretraining_examples_need_fixed_targets_or_their_own(tmp_path, default_uv_model):
    images, maps = _squares(2)
    photos = labelled_photos(_write(tmp_path / "labels.npz", images, maps), SIZE)
    targets = pretraining_targets(default_uv_model, np.array([[10, 12], [22, 12], [16, 17], [11, 23], [21, 23.0]]),
                                  SIZE)
    with pytest.raises(InputError, match="either the fixed targets or their own maps"):
        pretraining_dataset(photos, targets, 2)
    with pytest.raises(InputError, match="either the fixed targets or their own maps"):
        pretraining_dataset(photos.map(lambda x: x["image"]), None, 2)
    from tfface.training.profiling import FitProfiler

    with pytest.raises(InputError, match="turned on their own fits"):  # labels without their fits
        pretraining_dataset(photos, None, 2, profiler=FitProfiler(default_uv_model, SIZE))


def _with_fits(path, images, maps, yaw_degrees):
    """Labels with fits whose rotations have the given yaws (the other arrays are placeholders)."""
    count = len(images)
    turns = Rotation.from_euler("y", np.asarray(yaw_degrees)[:, None], degrees=True).as_matrix()
    rotations = turns @ np.diag([1.0, -1.0, -1.0])  # a frontal face, turned
    np.savez(path, images=images, maps=maps.astype(np.float16), vertices=np.zeros((count, 5, 3), np.float16),
             p_hat=np.tile(np.eye(3, dtype=np.float32), (count, 1, 1)), q_hat=np.zeros((count, 3), np.float32),
             R=rotations.astype(np.float32))
    return path


def test_labelled_photos_give_their_near_frontal_fits(tmp_path):
    from tfface.training.self_labels import PROFILABLE_YAW

    images, maps = _squares(4)
    yaws = [0.0, PROFILABLE_YAW + 5, -(PROFILABLE_YAW - 2), 3.0]
    path = _with_fits(tmp_path / "labels.npz", images, maps, yaws)
    assert len(list(labelled_photos(path, SIZE))) == 4  # without fits: every photo
    given = list(labelled_photos(path, SIZE, fits=True))
    assert len(given) == 3
    np.testing.assert_array_equal([example["image"].numpy() for example in given],
                                  images[[0, 2, 3]].astype(np.float32) / 255)
    assert set(given[0]["fit"]) == {"vertices", "p_hat", "q_hat", "R"}
    assert given[1]["fit"]["R"].dtype == tf.float32
    with pytest.raises(InputError, match="keeps no fits"):
        labelled_photos(_write(tmp_path / "plain.npz", images, maps), SIZE, fits=True)
    with pytest.raises(InputError, match="no fit is near-frontal"):
        labelled_photos(_with_fits(tmp_path / "turned.npz", images, maps, [40.0] * 4), SIZE, fits=True)


def test_turned_labelled_photos_are_given_as_often_as_asked(tmp_path):
    from tfface.training.self_labels import TURNED_YAW

    images, maps = _squares(4)
    path = _with_fits(tmp_path / "labels.npz", images, maps, [0.0, TURNED_YAW + 1, -(TURNED_YAW + 10), TURNED_YAW - 1])

    def shown(**kwargs) -> list[int]:
        """The photos' indices in the order given (each square's u is its index / 10)."""
        return [round(float(example["maps"][..., 0].numpy().max()) * 10)
                for example in labelled_photos(path, SIZE, **kwargs)]

    assert shown() == [0, 1, 2, 3]
    thrice = shown(turned_repeat=3)
    assert sorted(thrice) == [0, 1, 1, 1, 2, 2, 2, 3]
    assert thrice == shown(turned_repeat=3) != sorted(thrice)  # shuffled, the same way each time
    assert shown(turned_repeat=3, seed=1) != thrice
    with pytest.raises(InputError, match="keeps no fits"):
        labelled_photos(_write(tmp_path / "plain.npz", images, maps), SIZE, turned_repeat=2)
    with pytest.raises(InputError, match="turned_repeat"):
        labelled_photos(path, SIZE, turned_repeat=0)
    for repeat in (0, 1.5):
        with pytest.raises(InputError, match="self_label_turned_repeat"):
            CONFIGS["photos"].replace(self_label_turned_repeat=repeat)


def test_self_label_profile_share_lies_in_0_1():
    assert CONFIGS["photos"].replace(self_label_profile_share=1.0).self_label_profile_share == 1.0
    for share in (-0.1, 1.5):
        with pytest.raises(InputError, match="self_label_profile_share"):
            CONFIGS["photos"].replace(self_label_profile_share=share)


def test_self_label_share_must_lie_strictly_between_0_and_1():
    for share in (0.0, 1.0, 1.5):
        with pytest.raises(InputError, match="self_label_share"):
            CONFIGS["photos"].replace(self_label_share=share)


def test_fit_maps_of_a_known_camera_are_its_render(default_uv_model):
    """An ordinary camera ``x ~ K (R X + t)`` is the inverse camera ``P_hat = R^T K^-1``,
    ``q_hat = -R^T t`` with depth Z: its fit maps are the mesh's render, depth in mm."""
    model = default_uv_model.model
    K = np.array([[300.0, 0.0, 60.0], [0.0, 310.0, 66.0], [0.0, 0.0, 1.0]], np.float32)
    turn = Rotation.from_euler("yx", [25.0, -10.0], degrees=True).as_matrix()
    R = (np.diag([1.0, -1.0, -1.0]) @ turn).astype(np.float32)
    t = (-R @ model.mean.mean(0) + [0.0, 0.0, 650.0]).astype(np.float32)
    p_hat, q_hat = R.T @ np.linalg.inv(K), -R.T @ t
    triangles, vertex_uv = tf.constant(model.triangles), tf.constant(default_uv_model.vertex_uv)
    maps = fit_maps_of(model.mean[None], p_hat[None], q_hat[None], triangles, vertex_uv, 128).numpy()[0]
    fragments = rasterize(model.mean[None], triangles, K[None], R[None], t[None], 128, 128)
    region = fragments.mask[0].numpy()
    np.testing.assert_array_equal(maps[..., 3], region)
    assert 0.1 < region.mean() < 0.6
    np.testing.assert_allclose(maps[..., 0:2], interpolate(vertex_uv, triangles, fragments)[0].numpy()
                               * region[..., None], atol=1e-4)
    np.testing.assert_allclose(maps[..., 2], fragments.depth[0].numpy() * region, rtol=1e-4)
    assert 550 < maps[..., 2][region > 0].min() < maps[..., 2][region > 0].max() < 750  # mm about 650


@pytest.fixture(scope="module")
def shipped(runner):
    """The shipped network as a Keras FaceModel, and the astronaut's face crop ``(128, 128, 3)`` uint8.
    The network fits without its upright pass: half the traced graph (and the workers' memory),
    and the labelling code is the same either way."""
    from tfface.detection import crops, pipeline
    from tfface.io.images import read_image
    from tfface.paths import DEFAULT_MODEL, REPO_ROOT
    from tfface.training.from_export import exported_network, exported_uv_model

    network = exported_network(DEFAULT_MODEL, exported_uv_model(DEFAULT_MODEL), inference_upright_pass=False)
    picture = read_image(REPO_ROOT / "samples" / "astronaut.jpg")
    face = pipeline.reconstruct_framings(picture, [crops.Framing(np.array([225.0, 135.0]), 140.0, 0.3)], runner)[0]
    return network, face.crop


def test_a_failed_fits_singular_camera_renders_empty_maps(default_uv_model):
    """A failed fit's camera may be the zeros that stand in for a non-finite solve: it has no
    inverse, so it is never inverted, and its maps are empty; the valid fit beside it renders."""
    model = default_uv_model.model
    K = np.array([[300.0, 0.0, 64.0], [0.0, 300.0, 64.0], [0.0, 0.0, 1.0]], np.float32)
    R = np.diag([1.0, -1.0, -1.0]).astype(np.float32)
    t = (-R @ model.mean.mean(0) + [0.0, 0.0, 650.0]).astype(np.float32)
    p_hat = np.stack([R.T @ np.linalg.inv(K), np.zeros((3, 3), np.float32)])
    q_hat = np.stack([-R.T @ t, np.zeros(3, np.float32)])
    triangles, vertex_uv = tf.constant(model.triangles), tf.constant(default_uv_model.vertex_uv)
    vertices = np.stack([model.mean, model.mean])
    maps = fit_maps_of(vertices, p_hat, q_hat, triangles, vertex_uv, 64, valid=tf.constant([1.0, 0.0])).numpy()
    alone = fit_maps_of(vertices[:1], p_hat[:1], q_hat[:1], triangles, vertex_uv, 64).numpy()
    np.testing.assert_array_equal(maps[0], alone[0])
    assert maps[0, ..., 3].sum() > 200 and not maps[1].any()
    with pytest.raises(tf.errors.InvalidArgumentError):  # what the guard spares the labelling
        fit_maps_of(vertices[1:], p_hat[1:], q_hat[1:], triangles, vertex_uv, 64)


def test_the_shipped_network_labels_a_face_and_not_noise(shipped):
    """The astronaut's face crop is labelled with maps whose landmark UVs lie where its fit put
    the landmarks; random noise has no face to label."""
    from tfface.model import direct_landmarks

    network, face = shipped
    crop = face.astype(np.float32) / 255.0
    labels = label_photos(network, [crop[None]])
    images, maps = labels["images"], labels["maps"]
    assert images.shape == (1, 128, 128, 3) and images.dtype == np.uint8 and maps.dtype == np.float16
    np.testing.assert_array_equal(images[0], face)
    fit = network.infer(crop[None])
    landmark_uv = tf.constant(network.uv_model.vertex_uv[network.uv_model.model.landmarks68])
    read_back = direct_landmarks(tf.cast(maps, tf.float32), landmark_uv).numpy()[0]
    inner = slice(17, 36)  # brows and nose: the rest border the silhouette or a hole (eyes, mouth fill), where
    # the soft read-out is one-sided
    error = np.linalg.norm(read_back[inner] - fit["landmarks68"].numpy()[0, inner], axis=-1)
    assert np.median(error) < 0.5 and error.max() < 1.5  # pixels, on a 128-pixel crop
    for key in ("vertices", "p_hat", "q_hat", "R"):  # the fit itself is kept, to turn it
        np.testing.assert_allclose(labels[key][0], fit[key].numpy()[0], rtol=2e-3, atol=0.05)
    noise = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3)).astype(np.float32) / 255.0
    labels = label_photos(network, [noise])
    assert {key: value.shape[0] for key, value in labels.items()} == dict.fromkeys(labels, 0)
    assert labels["images"].shape == (0, 128, 128, 3) and labels["maps"].shape == (0, 128, 128, 4)


def test_turned_further_sees_each_head_from_gain_times_its_azimuth(default_uv_model):
    """Each mesh turns rigidly about its landmarks' centroid, so that the camera (centre ``q_hat``)
    sees it from ``gain`` times its azimuth, at most a profile; gain 1 leaves it as it is."""
    model = default_uv_model.model
    azimuths = np.radians([0.0, 20.0, -35.0, 70.0])
    q_hat = np.stack([600 * np.sin(azimuths), np.full(4, 40.0), 600 * np.cos(azimuths)], -1).astype(np.float32)
    vertices = np.repeat(model.mean[None], 4, axis=0).astype(np.float32)
    np.testing.assert_allclose(turned_further(vertices, q_hat, model.landmarks68, 1.0).numpy(), vertices, atol=1e-4)
    turned = turned_further(vertices, q_hat, model.landmarks68, 1.5).numpy()
    centre = model.mean[model.landmarks68].mean(0)
    np.testing.assert_allclose(turned[:, model.landmarks68].mean(1), np.repeat(centre[None], 4, 0), atol=1e-3)
    forward = turned[:, model.landmarks68[30]] - turned[:, model.landmarks68[27]]  # nose tip from its bridge
    forward0 = model.mean[model.landmarks68[30]] - model.mean[model.landmarks68[27]]
    head_turn = np.arctan2(forward[:, 0], forward[:, 2]) - np.arctan2(forward0[0], forward0[2])
    seen_from = azimuths - head_turn  # the camera's azimuth about the turned head
    np.testing.assert_allclose(np.degrees(seen_from), [0.0, 30.0, -52.5, 90.0], atol=1e-3)
    np.testing.assert_allclose(turned[:, :, 1], vertices[:, :, 1], atol=1e-3)  # about the vertical axis
    lengths = lambda v: np.linalg.norm(v - v[:, :1], axis=-1)  # noqa: E731
    np.testing.assert_allclose(lengths(turned), lengths(vertices), atol=2e-3)  # rigid


def test_labels_turned_further_keep_their_fits_and_render_the_turned_head(shipped):
    """With a turn gain the label's maps are those of its mesh turned further (under its own
    inverse camera), and the fit it keeps is the fit itself."""
    network, face = shipped
    crop = face.astype(np.float32)[None] / 255.0  # near-frontal: turned to a profile
    as_fitted, turned = label_photos(network, [crop]), label_photos(network, [crop], turn_gain=50.0)
    for key in ("images", "vertices", "p_hat", "q_hat", "R"):
        np.testing.assert_array_equal(turned[key], as_fitted[key])
    uv_model = network.uv_model
    expected = fit_maps_of(turned_further(turned["vertices"], turned["q_hat"], uv_model.model.landmarks68, 50.0),
                           turned["p_hat"], turned["q_hat"], tf.constant(uv_model.model.triangles, tf.int32),
                           tf.constant(uv_model.vertex_uv, tf.float32), 128).numpy()
    region = expected[..., 3] > 0
    assert np.mean(region != (turned["maps"][..., 3] > 0)) < 0.005  # float16 vertices: a few edge pixels
    both = region & (turned["maps"][..., 3] > 0)
    close = np.abs(turned["maps"][both][:, :2].astype(np.float32) - expected[both][:, :2]) <= 0.01
    assert close.mean() > 0.998  # the float16 vertices may move a pixel on an edge into the next triangle
    moved = np.abs(turned["maps"][..., :2].astype(np.float32) - as_fitted["maps"][..., :2].astype(np.float32))
    assert np.median(moved[both]) > 0.003  # the correspondence moved with the turn
    with pytest.raises(InputError, match="turn_gain must be positive"):
        label_photos(network, [crop], turn_gain=0.0)


def test_labelling_resumes_from_its_saved_chunks(tmp_path, shipped):
    """A killed labelling keeps its finished chunks: started again, it labels only the others'
    photos, and the merged file holds every chunk in the stream's order."""
    network, face = shipped
    photos = [np.clip(face.astype(np.int32) - 10 * i, 0, 255).astype(np.uint8) for i in range(5)]  # told apart
    stream = tf.data.Dataset.from_tensor_slices(np.stack(photos)).map(lambda p: tf.cast(p, tf.float32) / 255.0)
    out, parts = tmp_path / "labels.npz", tmp_path / "labels.npz.parts"
    parts.mkdir()
    earlier = label_photos(network, [np.stack(photos[2:4]).astype(np.float32) / 255.0])
    saved = np.zeros((2, 128, 128, 3), np.uint8)
    np.savez(parts / "chunk-00001.npz", **{**earlier, "images": saved})  # photos 2-3, told by their images
    assert label_photo_stream(network, stream, 5, out, chunk=2) == 5 and not parts.exists()
    merged = np.load(out)
    assert set(merged.files) == {"images", "maps", "vertices", "p_hat", "q_hat", "R"}
    assert all(len(merged[key]) == 5 for key in merged.files)
    np.testing.assert_array_equal(merged["images"], np.stack([photos[0], photos[1], saved[0], saved[1], photos[4]]))


def test_labelling_without_a_single_valid_fit_is_an_error(tmp_path, toy_uv_model):
    from tfface.training.loop import build_model

    parts = tmp_path / "labels.npz.parts"
    parts.mkdir()
    np.savez(parts / "chunk-00000.npz", images=np.zeros((0, 32, 32, 3), np.uint8),
             maps=np.zeros((0, 32, 32, 4), np.float16), vertices=np.zeros((0, 5, 3), np.float16),
             p_hat=np.zeros((0, 3, 3), np.float32), q_hat=np.zeros((0, 3), np.float32),
             R=np.zeros((0, 3, 3), np.float32))  # every fit of the stream's one chunk failed
    with pytest.raises(InputError, match="no photo could be labelled"):
        label_photo_stream(build_model(toy_uv_model, CONFIGS["tiny"]), tf.data.Dataset.range(1), 1,
                           tmp_path / "labels.npz", chunk=2)
    assert not (tmp_path / "labels.npz").exists()


def test_self_label_command_labels_a_folder_with_an_exported_model(tmp_path, runner, capsys):
    from PIL import Image

    from tfface import cli
    from tfface.detection import crops, pipeline
    from tfface.io.images import read_image
    from tfface.paths import DEFAULT_MODEL, REPO_ROOT

    picture = read_image(REPO_ROOT / "samples" / "astronaut.jpg")
    framing = crops.Framing(np.array([225.0, 135.0]), 190.0, 0.3)  # the face with room around it, as photos have
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(pipeline.reconstruct_framings(picture, [framing], runner)[0].crop).save(folder / "face.png")
    out = tmp_path / "labels.npz"
    assert cli.main(["self-label", "--model", str(DEFAULT_MODEL), "--images", f"{folder}:canonical",
                     "--count", "2", "--out", str(out)]) == 0
    assert "photos labelled into" in capsys.readouterr().out
    photos = list(labelled_photos(out, 128))
    assert 1 <= len(photos) <= 2 and photos[0]["maps"][..., 3].numpy().sum() >= 200
    assert cli.main(["self-label", "--model", str(DEFAULT_MODEL), "--count", "0", "--out", str(out)]) == 2
    assert "--count must be at least 1" in capsys.readouterr().err


def test_self_label_command_refuses_a_turn_gain_that_is_not_positive(tmp_path, capsys):
    from tfface import cli

    assert cli.main(["self-label", "--turn-gain", "-1", "--out", str(tmp_path / "labels.npz")]) == 2
    assert "--turn-gain must be positive, got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "labels.npz").exists()
