"""Training infrastructure: configs, metrics, pretraining targets, resumption, multi-worker."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfface.errors import InputError
from tfface.morphable.model import landmarks5_from_68
from tfface.runtime import native_bfloat16
from tfface.training import metrics
from tfface.training.config import CONFIGS, load_config
from tfface.training.data import mean_landmarks5, prepare_synthetic_data
from tfface.training.distribute import distribute_batches
from tfface.training.pretraining import aligning_camera, pretraining_dataset, pretraining_targets
from tfface.geometry.camera import project

#: Runs a sub-command of tfface.training.commands in a fresh process.
COMMAND = ("import argparse, sys; from tfface.training import commands; p = argparse.ArgumentParser(); "
           "commands.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


@pytest.fixture(scope="module")
def data_dir(default_uv_model, tmp_path_factory):
    """Tiny synthetic TFRecords (32 px): train, held-out and aligned splits."""
    folder = tmp_path_factory.mktemp("data")
    return prepare_synthetic_data(default_uv_model, CONFIGS["tiny"], folder)


def test_named_and_file_configs(tmp_path):
    assert load_config("small").image_size == 128
    assert load_config("paper").image_size == 224 and load_config("paper").num_samples == 10000
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"base": "tiny", "steps": 7}))
    config = load_config(path)
    assert config.steps == 7 and config.image_size == 32
    path.write_text(json.dumps({"no_such_field": 1}))
    with pytest.raises(InputError):
        load_config(path)
    with pytest.raises(InputError):
        load_config("no-such-config")
    path.write_text(json.dumps({"base": "photos", "pretrain_depth_weight": 25}))
    assert load_config(path).pretrain_depth_weight == 25 and load_config("photos").pretrain_depth_weight == 1
    with pytest.raises(InputError, match="pretrain_depth_weight"):
        CONFIGS["tiny"].replace(pretrain_depth_weight=0.0)
    with pytest.raises(InputError, match="profile_surroundings"):
        CONFIGS["tiny"].replace(profile_surroundings="blurred")


def test_pretraining_keras_loss_carries_its_depth_weight():
    """The pretraining's compiled loss is the batch mean of the weighted pretraining loss, and
    its depth weight survives serialisation."""
    import keras

    from tfface import losses
    from tfface.training.loop import PretrainingLoss

    rng = np.random.default_rng(3)
    pred, target = rng.uniform(size=(2, 2, 8, 8, 5)).astype(np.float32)
    target = target[..., :4].copy()
    target[..., 3] = target[..., 3] > 0.5
    loss = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(PretrainingLoss(20.0)))
    assert isinstance(loss, PretrainingLoss) and loss.depth_weight == 20.0
    np.testing.assert_allclose(float(loss(target, pred)),
                               losses.pretraining_loss(pred, target, depth_weight=20.0).numpy().mean(), rtol=1e-5)
    assert float(loss(target, pred)) > float(PretrainingLoss()(target, pred))


def test_seam_free_keeps_the_vignettes_disc_feather_included():
    from tfface.layers.vignette import FEATHER

    assert CONFIGS["small"].seam_radius() is None
    assert CONFIGS["small"].replace(input_vignette=0.3, seam_free=True).seam_radius() == pytest.approx(0.3 + FEATHER)
    assert CONFIGS["small"].seam_confinement(0.5) is None
    assert CONFIGS["small"].replace(input_vignette=0.3, seam_free=True).seam_confinement(0.5) == (
        pytest.approx(0.3 + FEATHER), 0.5)
    for vignette in (0.0, 0.5 - FEATHER):  # no disc, or one that reaches the edge
        with pytest.raises(InputError, match="seam_free"):
            CONFIGS["small"].replace(input_vignette=vignette, seam_free=True)


@pytest.mark.parametrize("flags, expected", [([], native_bfloat16()), (["--no-mixed-precision"], False),
                                             (["--mixed-precision"], True)])
def test_mixed_precision_follows_the_cpu_unless_set(flags, expected, tmp_path, capsys):
    from tfface.cli import build_parser
    from tfface.training.commands import resolve_run

    args = build_parser().parse_args(["train", "--config", "small", "--workdir", str(tmp_path), *flags])
    config = resolve_run(args)[0]
    assert config.mixed_precision is (None if not flags else expected)
    assert config.uses_mixed_precision() is expected
    assert capsys.readouterr().out.startswith("U-Net precision: " + ("mixed bfloat16" if expected else "float32"))
    args = build_parser().parse_args(["train", "--config", "tiny", "--workdir", str(tmp_path), *flags])
    assert resolve_run(args)[0].uses_mixed_precision() is (expected if flags else False)


@pytest.mark.parametrize(("cpuinfo", "native"), [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile\n", True),
    ("flags\t\t: fpu sse2 avx2 fma amx_bf16\n", True),
    ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n", False),  # AVX-512 without BF16
    ("model name\t: bf16 in a name is no flag\nflags\t\t: avx2\n", False),
    ("", False),
])
def test_native_bfloat16_reads_cpu_flags(cpuinfo, native):
    assert native_bfloat16(cpuinfo) is native


def test_nme_and_dense_metrics_exact():
    target = np.zeros((1, 68, 2))
    target[0, 36] = [0.0, 0.0]
    target[0, 45] = [10.0, 0.0]
    predicted = target + [3.0, 4.0]  # every point 5 px off, inter-ocular 10 px
    np.testing.assert_allclose(metrics.nme68(predicted, target), [0.5])
    five = landmarks5_from_68(target)
    np.testing.assert_allclose(metrics.nme5(five + [0.0, 1.0], five),
                               [1.0 / np.linalg.norm(five[0, 0] - five[0, 1])])
    depth = np.random.default_rng(0).uniform(1, 2, size=(2, 4, 4))
    mask = np.ones_like(depth)
    np.testing.assert_allclose(metrics.scale_aligned_depth_error(depth, 300.0 * depth, mask), 0.0, atol=1e-9)
    uv = np.zeros((1, 2, 2, 2))
    np.testing.assert_allclose(metrics.correspondence_error_uv(uv + [0.3, 0.4], uv, np.ones((1, 2, 2))), [0.5])
    with pytest.raises(InputError):
        metrics.nme68(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)))


def test_landmark_bias_and_spread_exact():
    rng = np.random.default_rng(0)
    target = rng.uniform(20.0, 100.0, size=(3, 68, 2))
    interocular = np.linalg.norm(target[:, 36] - target[:, 45], axis=-1)
    shifted = target.copy()
    shifted[:, 48:68] += [0.0, 2.0]  # only the mouth moves 2 px down
    bias = metrics.landmark_group_bias(shifted, target)
    np.testing.assert_allclose(bias["mouth"], [0.0, np.mean(2.0 / interocular)])
    for group in ("jaw", "brows", "nose", "eyes"):
        np.testing.assert_allclose(bias[group], [0.0, 0.0], atol=1e-12)
    centre = target.mean(1, keepdims=True)
    scaled = centre + 1.03 * (target - centre) + [5.0, -1.0]  # 3% too large, anywhere
    np.testing.assert_allclose(metrics.landmark_spread_ratio(scaled, target), 1.03)
    with pytest.raises(InputError):
        metrics.landmark_spread_ratio(target[:, :5], target)


def test_aligning_camera_places_points_on_targets():
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-40, 40, 5), rng.uniform(-40, 40, 5), np.zeros(5)])
    targets = 64.0 + 0.5 * points[:, :2] * [1.0, -1.0]
    K, R, t = aligning_camera(points, targets)
    pixels, depth = project(points[None].astype(np.float32), K[None], R[None], t[None])
    np.testing.assert_allclose(pixels.numpy()[0], targets, atol=1e-3)
    assert np.all(depth.numpy() > 0)


def test_pretraining_targets_and_shared_augmentation(default_uv_model, data_dir):
    template = mean_landmarks5(data_dir)
    targets = pretraining_targets(default_uv_model, template, 32)
    maps = targets.maps
    assert maps.shape == (32, 32, 4)
    face = maps[..., 3] > 0
    assert 0.1 < face.mean() < 0.9
    assert np.all((maps[face, 0:2] >= 0) & (maps[face, 0:2] <= 1)) and np.all(maps[~face, 0:3] == 0)
    np.testing.assert_allclose(maps[face, 2], 1.0)
    # the same similarity moves image and maps: feed the face mask as the image
    mask_images = tf.data.Dataset.from_tensors(tf.tile(maps[..., 3:4], [1, 1, 3])).repeat(4)
    images, target = next(iter(pretraining_dataset(mask_images, targets, 4, seed=1)))
    assert images.shape == (4, 32, 32, 3) and target.shape == (4, 32, 32, 4)
    agreement = np.mean((images.numpy()[..., 0] > 0.5) == (target.numpy()[..., 3] > 0.5))
    assert agreement > 0.97
    assert not np.allclose(target.numpy()[0, ..., 3], maps[..., 3])  # it did move


def test_pretraining_no_face_examples_have_zero_confidence(default_uv_model, data_dir):
    targets = pretraining_targets(default_uv_model, mean_landmarks5(data_dir), 32)
    white = tf.data.Dataset.from_tensors(tf.ones([32, 32, 3])).repeat()
    images, target = next(iter(pretraining_dataset(white, targets, 64, seed=3, no_face_fraction=0.5)))
    textured = np.any(images.numpy() < 0.999, axis=(1, 2, 3))  # a face-free texture replaced the image
    face_area = target.numpy()[..., 3].sum(axis=(1, 2))
    assert 10 < textured.sum() < 54  # about half of 64
    assert np.all(face_area[textured] == 0) and np.all(face_area[~textured] > 0)
    with pytest.raises(InputError, match="no_face_fraction"):
        pretraining_dataset(white, targets, 4, no_face_fraction=1.5)


def test_distribute_batches_single_replica_is_plain_batching():
    ds = distribute_batches(tf.distribute.get_strategy(), lambda: tf.data.Dataset.range(10), 4)
    assert [b.numpy().tolist() for b in ds] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def _run(args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-c", COMMAND, *map(str, args)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _tiny_config(tmp_path, **fields) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"base": "tiny", **fields}))
    return path


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(default_uv_model, data_dir, tmp_path):
    uv_path = tmp_path / "uv.npz"
    default_uv_model.save(uv_path)
    config = _tiny_config(tmp_path, steps=60, checkpoint_every=4, summary_every=1000)
    work = tmp_path / "run"
    args = ["train", "--config", config, "--workdir", work, "--data", data_dir, "--uv-model", uv_path,
            "--skip-pretrain"]
    first = _run(args)
    checkpoints = work / "train" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints / "step-000003.weights.h5").exists():
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = sorted(checkpoints.glob("step-*.weights.h5"))
    last_epoch = int(done[-1].name[5:11])
    assert 3 <= last_epoch < 15, "the first run must have been killed mid-way"
    second = _run(args)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    start = int(out.split("main training: starting at step ")[1].split()[0])
    metadata = json.loads((work / "train" / "backup" / "training_metadata.json").read_text())
    # resumed exactly at a checkpoint at or after the last one seen, without losing steps
    assert start % 4 == 0 and start >= 4 * last_epoch
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 60
    assert metadata["epoch"] == 15
    assert (checkpoints / "step-000015.weights.h5").exists()
    # the trained run evaluates on the held-out split
    evaluate = _run(["evaluate", "--config", config, "--workdir", work, "--data", data_dir, "--uv-model", uv_path])
    out, err = evaluate.communicate(timeout=300)
    assert evaluate.returncode == 0, err[-2000:]
    assert "68-landmark NME, fitted" in out and "shape error (mm per vertex)" in out and " 8\n" in out + "\n"


@pytest.mark.slow
def test_training_starts_from_an_exported_network(default_uv_model, data_dir, tmp_path):
    """``--init-model``: no pretraining; the run fits the export's UV-3DMM and its first steps
    move the export's weights, not a fresh initialisation; the export's network must match."""
    from tfface import export
    from tfface.morphable.uv3dmm import UVMorphableModel
    from tfface.training.loop import build_model

    tiny = CONFIGS["tiny"]
    seed = build_model(default_uv_model, tiny.replace(seed=7))  # not the run's initialisation (seed 0)
    folder = export.export_model(export.inference_model(seed), tmp_path / "savedmodel", "tiny", 1, tflite=False)
    work = tmp_path / "run"
    args = ["train", "--config", _tiny_config(tmp_path, steps=4), "--workdir", work, "--data", data_dir]
    out, err = _run([*args, "--init-model", folder]).communicate(timeout=300)
    assert f"main training starts from the network of {folder}" in out, err[-2000:]
    assert not (work / "pretrain").exists() and json.loads(out.strip().splitlines()[-1])["steps"] == 4
    fitted = UVMorphableModel.load(work / "uv3dmm.npz").model
    np.testing.assert_array_equal(fitted.albedo_basis, default_uv_model.model.albedo_basis[: tiny.num_albedo])
    trained = build_model(work / "uv3dmm.npz", tiny)
    trained.load_weights(work / "train" / "final.weights.h5")
    fresh = build_model(default_uv_model, tiny)
    kernels = [i for i, w in enumerate(seed.unet.weights) if w.path.endswith("kernel")]
    moved = [np.abs(trained.unet.weights[i].numpy() - seed.unet.weights[i].numpy()).max() for i in kernels]
    apart = [np.abs(fresh.unet.weights[i].numpy() - seed.unet.weights[i].numpy()).max() for i in kernels]
    assert max(moved) < 0.05 < min(apart), (moved, apart)
    wide = _run(["train", "--config", _tiny_config(tmp_path, width=0.125), "--workdir", tmp_path / "wide",
                 "--data", data_dir, "--init-model", folder])
    assert "width 0.125 (the export: 0.0625)" in wide.communicate(timeout=300)[1] and wide.returncode == 1
    both = _run([*args, "--init-model", folder, "--skip-pretrain"])
    assert "not allowed with argument" in both.communicate(timeout=120)[1] and both.returncode == 2


@pytest.mark.slow
def test_pretraining_continues_from_given_unet_weights(default_uv_model, data_dir, tmp_path):
    """``--pretrain-from``: the pretraining's first steps move the given weights, not a fresh
    initialisation; a missing or foreign weights file is a clear error."""
    from tfface.training.loop import build_model

    tiny = CONFIGS["tiny"]
    seed = build_model(default_uv_model, tiny.replace(seed=7))  # not the run's initialisation (seed 0)
    start = tmp_path / "start.weights.h5"
    seed.unet.save_weights(start)
    uv_path = tmp_path / "uv.npz"
    default_uv_model.save(uv_path)
    work = tmp_path / "run"
    args = ["train", "--config", _tiny_config(tmp_path, steps=1, pretrain_steps=3), "--workdir", work,
            "--data", data_dir, "--uv-model", uv_path]
    out, err = _run([*args, "--pretrain-from", start]).communicate(timeout=300)
    assert f"pretraining continues from {start}" in out, err[-2000:]
    pretrained = build_model(default_uv_model, tiny)
    pretrained.unet.load_weights(work / "pretrain" / "unet.weights.h5")
    fresh = build_model(default_uv_model, tiny)
    kernels = [i for i, w in enumerate(seed.unet.weights) if w.path.endswith("kernel")]
    moved = [np.abs(pretrained.unet.weights[i].numpy() - seed.unet.weights[i].numpy()).max() for i in kernels]
    apart = [np.abs(fresh.unet.weights[i].numpy() - seed.unet.weights[i].numpy()).max() for i in kernels]
    assert 0 < max(moved) < 0.05 < min(apart), (moved, apart)
    missing = _run([*args[:4], tmp_path / "missing", *args[5:], "--pretrain-from", tmp_path / "none.h5"])
    # (the test's command skips tfface.cli.main, which prints an InputError without the traceback)
    assert "InputError: no U-Net weights file at" in missing.communicate(timeout=300)[1] and missing.returncode == 1
    wide = _run(["train", "--config", _tiny_config(tmp_path, width=0.125), "--workdir", tmp_path / "wide",
                 "--data", data_dir, "--uv-model", uv_path, "--pretrain-from", start])
    assert "holds no weights of this configuration's U-Net" in wide.communicate(timeout=300)[1]
    assert wide.returncode == 1
    both = _run([*args, "--pretrain-from", start, "--skip-pretrain"])
    assert "not allowed with argument" in both.communicate(timeout=120)[1] and both.returncode == 2


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_match_one_worker_on_the_same_global_batch(default_uv_model, data_dir, tmp_path):
    uv_path = tmp_path / "uv.npz"
    default_uv_model.save(uv_path)
    # every pixel sampled (32 x 32 = 1024), so the sample choice cannot differ between runs
    config = _tiny_config(tmp_path, steps=3, checkpoint_every=1, summary_every=1000, num_samples=1024,
                          batch_size=4, synchronized_batchnorm=True, coefficient_prior=1000.0)
    common = ["train", "--config", config, "--data", data_dir, "--uv-model", uv_path, "--skip-pretrain"]
    single = _run(common + ["--workdir", tmp_path / "single"], env={"CUDA_VISIBLE_DEVICES": ""})
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        _run(common + ["--workdir", tmp_path / f"worker{i}", "--strategy", "multiworker"],
             env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]
    results = []
    for process in [single, *workers]:
        out, err = process.communicate(timeout=400)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["steps"] == 3 for r in results)
    for worker in results[1:]:
        # step 1: same weights, same images -> the same loss up to float32 summation order;
        # later steps follow all-reduced gradients, so rounding differences grow a little
        np.testing.assert_allclose(worker["epoch_losses"][0], results[0]["epoch_losses"][0], rtol=1e-5)
        np.testing.assert_allclose(worker["epoch_losses"], results[0]["epoch_losses"], rtol=3e-3)


def test_non_finite_steps_are_skipped_and_a_run_of_them_stops_training(default_uv_model, tmp_path):
    """Steps 3, 5 and 6 get an injected NaN (the camera-translation prior weight of the geometric
    solve), which makes their loss and gradient NaN: each is skipped (network weights, batch-norm
    statistics, adaptive regularisation and optimizer state unchanged; skipped_steps counts it)
    and the second skipped step in a row ends the run before any checkpoint could store a later
    state.

    (A NaN pixel would not do: the preprocessing treats non-finite pixels as black.)"""
    import keras

    from tfface.training.callbacks import NonFiniteTrainingError, StopOnNonFiniteSteps
    from tfface.training.loop import build_model

    model = build_model(default_uv_model, CONFIGS["tiny"])
    images = tf.data.Dataset.from_tensors(np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32))
    poisoned_steps = (2, 4, 5)
    seen, states = [], []

    def poison(batch, logs=None):
        model.geometric.translation_weight.assign(np.nan if len(seen) in poisoned_steps else 0.0)

    def record(batch, logs=None):
        seen.append({k: float(np.ravel(v)[0]) for k, v in logs.items()})
        variables = [*model.unet.weights, *model.regularizer.weights, *model.optimizer.variables]
        states.append([w.numpy().copy() for w in variables])

    callbacks = [keras.callbacks.ModelCheckpoint(str(tmp_path / "step-{epoch}.weights.h5"), save_weights_only=True,
                                                 save_freq="epoch"),
                 keras.callbacks.LambdaCallback(on_train_batch_begin=poison, on_train_batch_end=record),
                 StopOnNonFiniteSteps(max_consecutive=2)]
    with pytest.raises(NonFiniteTrainingError, match="2 consecutive steps"):
        model.fit(images.repeat(), epochs=10, steps_per_epoch=1, callbacks=callbacks, verbose=0)
    assert [entry["skipped_steps"] for entry in seen] == [0, 0, 1, 1, 2, 3]
    assert [entry["consecutive_skipped_steps"] for entry in seen] == [0, 0, 1, 0, 1, 2]
    assert all(np.isfinite(entry["loss"]) for entry in seen)  # the loss trackers leave skipped steps out
    assert int(model.optimizer.iterations.numpy()) == 3
    unchanged = [all(np.array_equal(a, b) for a, b in zip(before, after)) for before, after in zip(states, states[1:])]
    assert unchanged == [False, True, False, True, True]  # steps 2 and 4 trained, 3, 5 and 6 changed nothing
    assert all(np.all(np.isfinite(w)) for w in states[-1])
    # The run stopped within epoch 6: the last checkpoint is that of epoch 5, with the last good weights.
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [f"step-{e}.weights.h5" for e in range(1, 6)]
    restored = build_model(default_uv_model, CONFIGS["tiny"])
    restored.load_weights(tmp_path / "step-5.weights.h5")
    for a, b in zip(restored.unet.weights, model.unet.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_photo_training_mixes_in_renders_at_its_rate(default_uv_model, data_dir, tmp_path):
    from PIL import Image

    from tfface.data.photos import PhotoSource
    from tfface.training.sources import PhotoData

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(4):  # pure green photos: every crop, warp and fill of them stays green
        Image.fromarray(np.full((48, 48, 3), (0, 255, 0), np.uint8)).save(photos / f"{index}.png")
    config = CONFIGS["tiny"].replace(synthetic_mix=0.3)
    source = PhotoData.for_config(default_uv_model, config, [PhotoSource.parse(str(photos))],
                                  [PhotoSource.parse(str(photos))], synthetic=data_dir)
    images = np.stack(list(source.training_images().take(400).as_numpy_iterator()))
    green = np.all(np.abs(images - [0.0, 1.0, 0.0]) < 0.02, axis=(1, 2, 3))
    assert images.shape == (400, 32, 32, 3)
    assert abs(np.mean(~green) - 0.3) < 0.07  # renders: binomial sd 0.023
    with pytest.raises(InputError, match="synthetic_mix"):
        PhotoData.for_config(default_uv_model, config, [PhotoSource.parse(str(photos))],
                             [PhotoSource.parse(str(photos))])


def _assert_step_adds_weighted_loss(uv_model, config, batch, extra_loss, name: str, weight: float,
                                    plain_config=CONFIGS["tiny"]):
    """Under plain SGD, a step of ``config`` on ``batch`` differs from ``plain_config``'s step
    on ``batch["image"]`` (same start) by exactly lr x ``weight`` x the gradient of
    ``extra_loss(model)`` (the mean term logged as ``name``), which moves most variables."""
    import keras

    from tfface.training.loop import build_model

    rate = 0.01
    steps = {}
    for label, step_config, step_batch in [("plain", plain_config, batch["image"]), ("extra", config, batch)]:
        model = build_model(uv_model, step_config)
        model.compile(optimizer=keras.optimizers.SGD(rate))
        start = [v.numpy().copy() for v in model.trainable_variables]
        if label == "extra":
            model.build_for_training()
            with tf.GradientTape() as tape:
                extra = tf.reduce_mean(extra_loss(model))
            extra_gradient = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(extra, model.trainable_variables)]
        logs = model.fit(tf.data.Dataset.from_tensors(step_batch), epochs=1, shuffle=False, verbose=0).history
        steps[label] = (start, [v.numpy() for v in model.trainable_variables], logs)
    (start, plain, plain_logs), (extra_start, moved_weights, logs) = steps["plain"], steps["extra"]
    for a, b in zip(start, extra_start):
        np.testing.assert_array_equal(a, b)
    assert name not in plain_logs
    np.testing.assert_allclose(logs[name][0], float(extra), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"][0], plain_logs["loss"][0], rtol=1e-5)  # logged apart
    moved = 0
    for p, a, g in zip(plain, moved_weights, extra_gradient):
        update = rate * weight * g  # float32 round-off: 1% of the variable's largest update
        np.testing.assert_allclose(p - a, update, atol=max(1e-6, 0.01 * np.abs(update).max()))
        moved += np.abs(g).max() > 1e-4
    assert moved > len(extra_gradient) // 2


def test_pose_anchor_adds_the_weighted_pretraining_loss_to_the_step(default_uv_model):
    """With ``pose_anchor_weight`` w, a step on ``{"image", "anchor"}`` descends the unsupervised
    loss plus w x the anchor batch's pretraining loss."""
    from tfface import losses

    rng = np.random.default_rng(0)
    images, anchor_images = rng.uniform(size=(2, 4, 32, 32, 3)).astype(np.float32)
    targets = np.concatenate([rng.uniform(size=(4, 32, 32, 3)), rng.uniform(size=(4, 32, 32, 1)) > 0.5],
                             -1).astype(np.float32)
    _assert_step_adds_weighted_loss(
        default_uv_model, CONFIGS["tiny"].replace(pose_anchor_weight=3.0, pretrain_depth_weight=5.0),
        {"image": images, "anchor": (anchor_images, targets)},
        lambda model: losses.pretraining_loss(model.predict_maps(anchor_images, training=True), targets,
                                              depth_weight=5.0),
        "anchor", 3.0)


@pytest.mark.parametrize("seams", [{}, {"input_vignette": 0.3, "seam_free": True}])
def test_equivariance_adds_the_weighted_equivariance_loss_to_the_step(default_uv_model, seams):
    """With ``equivariance_weight`` w, a step descends the unsupervised loss plus w x the
    equivariance loss of the batch under the similarities drawn for that step (step 0), with
    the similarities confined or not."""
    images = np.random.default_rng(1).uniform(size=(4, 32, 32, 3)).astype(np.float32)
    _assert_step_adds_weighted_loss(
        default_uv_model, CONFIGS["tiny"].replace(equivariance_weight=2.0, **seams), {"image": images},
        lambda model: model.equivariance_terms(images, model.predict_maps(images, training=True)),
        "equivariance", 2.0, CONFIGS["tiny"].replace(**seams))


def test_pose_anchor_pairs_every_training_image_with_a_pretraining_example(default_uv_model, data_dir):
    from tfface.training.loop import _anchored, build_model
    from tfface.training.sources import SyntheticData

    config = CONFIGS["tiny"].replace(pose_anchor_weight=1.0, no_face_fraction=0.0)
    source = SyntheticData(data_dir)
    assert _anchored(build_model(default_uv_model, CONFIGS["tiny"]), CONFIGS["tiny"], source) == source.training_images
    examples = list(_anchored(build_model(default_uv_model, config), config, source)().take(8).as_numpy_iterator())
    training = list(source.training_images().take(8).as_numpy_iterator())
    for example, image in zip(examples, training):
        np.testing.assert_array_equal(example["image"], image)
        anchor_image, target = example["anchor"]
        assert anchor_image.shape == (32, 32, 3) and target.shape == (32, 32, 4)
        assert set(np.unique(target[..., 3])) <= {0.0, 1.0} and target[..., 3].mean() > 0.1  # a face region


def _face_centroids(maps: np.ndarray) -> np.ndarray:
    """``(B, 2)`` pixel centroid (x, y) of the face-region channel of ``(B, H, W, 4)`` target maps."""
    face = maps[..., 3]
    ys, xs = np.mgrid[:face.shape[1], :face.shape[2]]
    area = face.sum(axis=(1, 2))
    return np.stack([(face * xs).sum(axis=(1, 2)) / area, (face * ys).sum(axis=(1, 2)) / area], -1)


def test_pretraining_examples_move_within_the_configured_similarity(default_uv_model, data_dir):
    from tfface.training.loop import _pretraining_examples, build_model
    from tfface.training.sources import SyntheticData

    source = SyntheticData(data_dir)
    still = CONFIGS["tiny"].replace(no_face_fraction=0.0, augment_rotation=0.0, pretrain_scale=(1.0, 1.0),
                                    pretrain_translation=0.0)
    model = build_model(default_uv_model, still)
    fixed = pretraining_targets(default_uv_model, source.mean_landmarks5(), 32).maps
    _, maps = next(iter(_pretraining_examples(model, still, source, 16)))
    np.testing.assert_allclose(maps.numpy(), np.broadcast_to(fixed, maps.shape), atol=1e-5)

    shift = 0.15
    moving = still.replace(pretrain_translation=shift)
    _, maps = next(iter(_pretraining_examples(model, moving, source, 32)))
    moves = _face_centroids(maps.numpy()) - _face_centroids(fixed[None])
    assert np.abs(moves).max() <= shift * 32 + 0.5  # within the range (half a pixel of rasterisation)
    assert np.abs(moves).max(axis=0).min() > 0.6 * shift * 32  # and reaching across it on both axes


def test_self_label_share_of_every_pretraining_batch(tmp_path, default_uv_model, data_dir):
    from tfface.training.loop import _pretraining_examples, build_model
    from tfface.training.sources import SyntheticData

    source = SyntheticData(data_dir)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    maps = np.zeros((4, 32, 32, 4), np.float32)
    for i in range(4):  # labelled squares, each elsewhere and with its own u
        maps[i, 4 + 2 * i:16 + 2 * i, 6 + 3 * i:16 + 3 * i] = [i / 10, 0.5, 1.0, 1.0]
    np.savez(tmp_path / "l.npz", images=images, maps=maps)
    still = CONFIGS["tiny"].replace(no_face_fraction=0.0, augment_rotation=0.0, pretrain_scale=(1.0, 1.0),
                                    pretrain_translation=0.0, self_labels=str(tmp_path / "l.npz"),
                                    self_label_share=0.25)
    model = build_model(default_uv_model, still)
    fixed = pretraining_targets(default_uv_model, source.mean_landmarks5(), 32).maps
    _, batch = next(iter(_pretraining_examples(model, still, source, 8)))
    batch = batch.numpy()
    np.testing.assert_allclose(batch[:6], np.broadcast_to(fixed, (6,) + fixed.shape), atol=1e-5)
    for target in batch[6:]:  # two of eight: labelled photos, as labelled
        assert any(np.allclose(target, square, atol=1e-3) for square in maps)
    _, batch = next(iter(_pretraining_examples(model, still.replace(self_label_share=0.99), source, 4)))
    np.testing.assert_allclose(batch.numpy()[0], fixed, atol=1e-5)  # one template example is always kept
    with pytest.raises(InputError, match="at least 2"):
        _pretraining_examples(model, still, source, 1)
    with pytest.raises(InputError, match="keeps no fits"):  # turned photos shown more often: their fits tell which
        _pretraining_examples(model, still.replace(self_label_turned_repeat=2), source, 8)
    images, batch = next(iter(_pretraining_examples(model, still.replace(no_face_fraction=1.0), source, 8)))
    assert not np.any(batch.numpy()[..., 3])  # labelled examples are made face-free too
    assert np.all(images.numpy()[6:].std(axis=(1, 2, 3)) > 0.02)  # textures, not the black labelled photos


def test_a_share_of_the_labelled_examples_is_turned_on_their_fits(tmp_path, default_uv_model, data_dir):
    from tfface.training.loop import _pretraining_examples, build_model
    from tfface.training.self_labels import fit_maps_of
    from tfface.training.sources import SyntheticData

    source = SyntheticData(data_dir)
    model3d = default_uv_model.model
    template = pretraining_targets(default_uv_model, source.mean_landmarks5(), 32)
    p_hat, q_hat = np.linalg.inv(template.K @ template.R), -template.R.T @ template.t  # its inverse camera
    fit = {"vertices": model3d.mean[None].astype(np.float16), "p_hat": p_hat[None].astype(np.float32),
           "q_hat": q_hat[None].astype(np.float32), "R": template.R[None].astype(np.float32)}
    maps = fit_maps_of(tf.cast(fit["vertices"], tf.float32), fit["p_hat"], fit["q_hat"], model3d.triangles,
                       default_uv_model.vertex_uv, 32).numpy()
    ramp = np.broadcast_to(np.linspace(0, 255, 32).astype(np.uint8)[None, None, :, None], (1, 32, 32, 3))
    np.savez(tmp_path / "l.npz", images=ramp, maps=maps.astype(np.float16), **fit)
    still = CONFIGS["tiny"].replace(no_face_fraction=0.0, augment_rotation=0.0, pretrain_scale=(1.0, 1.0),
                                    pretrain_translation=0.0, self_labels=str(tmp_path / "l.npz"),
                                    self_label_share=0.5, self_label_profile_share=0.5)
    model = build_model(default_uv_model, still)
    _, batch = next(iter(_pretraining_examples(model, still, source, 8)))
    batch = batch.numpy()  # 4 template examples, 2 labelled as labelled, 2 turned on their fit by 0 degrees
    np.testing.assert_allclose(batch[:4], np.broadcast_to(template.maps, (4,) + template.maps.shape), atol=1e-5)
    np.testing.assert_allclose(batch[4:], np.broadcast_to(maps[0], (4,) + maps.shape[1:]), rtol=2e-3, atol=2e-3)
    for share, turned in ((0.5, 2), (1.0, 4), (0.25, 1)):  # round(share x 4) turned, by up to 60 degrees
        turning = still.replace(pretrain_max_yaw=60.0, self_label_profile_share=share)
        batch = next(iter(_pretraining_examples(model, turning, source, 8)))[1].numpy()
        change = np.abs(batch[4:, ..., :2] - maps[0, ..., :2]).mean(axis=(1, 2, 3))  # the correspondence
        assert list(change > 1e-3) == [False] * (4 - turned) + [True] * turned, change
    turning = still.replace(pretrain_max_yaw=60.0, self_label_profile_share=1.0)
    mirrored, turned_around = (next(iter(_pretraining_examples(model, turning.replace(profile_surroundings=fill),
                                                                    source, 8))) for fill in ("mirrored", "turned"))
    np.testing.assert_array_equal(mirrored[1].numpy(), turned_around[1].numpy())  # the same turns and maps
    assert np.abs(mirrored[0].numpy()[4:] - turned_around[0].numpy()[4:]).max() > 0.05  # around the face
    unfitted = tmp_path / "plain.npz"
    np.savez(unfitted, images=np.full((1, 32, 32, 3), 128, np.uint8), maps=maps.astype(np.float16))
    with pytest.raises(InputError, match="keeps no fits"):
        _pretraining_examples(model, still.replace(self_labels=str(unfitted)), source, 8)


def test_bad_similarity_ranges_raise():
    for fields in ({"pretrain_scale": (1.2, 0.9)}, {"pretrain_translation": -0.1}, {"photo_scale": (0.0, 1.0)},
                   {"equivariance_rotation": -10.0}):
        with pytest.raises(InputError):
            CONFIGS["photos"].replace(**fields)
    assert CONFIGS["photos"].replace(pretrain_scale=[0.7, 1.4]).pretrain_scale == (0.7, 1.4)  # JSON lists


def test_periodic_progress_shows_the_dev_photos_first():
    from tfface.training.callbacks import progress_lines

    results = {"photos/landmarks68/nme": 0.1993, "photos/landmarks68/nme_yaw_mean": 0.2441,
               "photos/landmarks68/failed": 2.0, "photos/landmarks68_original/nme": 0.5, "nme68": 0.2722,
               "direct_nme68": 0.2592, "failed": 0, "count": 100}
    assert progress_lines(results) == ["dev photos box NME 19.93% (bins mean 24.41%, 2 failed)",
                                       "synthetic renders nme68 27.22%, direct_nme68 25.92%"]
    assert progress_lines({"nme68": 0.1, "failed": 3, "count": 100}) == [
        "synthetic renders nme68 10.00%, 3 of 100 fits failed (not in the means)"]
    # photos without yaw annotations have no bins
    assert progress_lines({"photos/pts/nme": 0.25, "photos/pts/failed": 0.0}) == ["dev photos box NME 25.00% (0 failed)"]


def test_photo_runs_default_to_the_photo_recipe_and_renders_to_small():
    import argparse

    from tfface.training.commands import default_config

    def args(**fields):
        return argparse.Namespace(**{"config": None, "synthetic": False, "data": None, **fields})

    assert default_config(args()) == "photos" and default_config(args(synthetic=True)) == "small"
    assert default_config(args(data="runs/x/data")) == "small" and default_config(args(config="tiny")) == "tiny"
    photos = load_config("photos")
    assert photos.pose_anchor_weight > 0 and photos.pretrain_max_yaw > 0 and photos.joint_photometric_confidence
    assert photos.profile_relight
    assert photos.inference_flip_test and not load_config("small").inference_flip_test
    assert photos.inference_upright_pass and not load_config("small").inference_upright_pass
    assert photos.image_size == load_config("small").image_size


def test_a_run_folder_keeps_one_configuration_and_older_runs_resume(tmp_path):
    from tfface.training.loop import save_config

    config = CONFIGS["tiny"].replace(inference_flip_test=False)
    save_config(config, tmp_path)
    save_config(config, tmp_path)  # the same configuration resumes
    with pytest.raises(InputError, match="different configuration"):
        save_config(config.replace(steps=7), tmp_path)
    # A run saved before a field existed used its default: it resumes, and only with the default.
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["inference_flip_test"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    save_config(config, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="different configuration"):
        save_config(config.replace(inference_flip_test=True), tmp_path)
