"""``tfface reconstruct`` and ``tfface export``: the inference side of the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tfface.errors import InputError, ModelFileError
from tfface.paths import DEFAULT_MODEL, REPO_ROOT

if TYPE_CHECKING:
    from tfface.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` and ``export`` sub-commands."""
    rec = subparsers.add_parser(
        "reconstruct", help="reconstruct faces: mesh (OBJ, PLY), landmarks and pose (JSON), overlay and panels (PNG)",
        description="Reconstruct every face of photos, frame folders and videos (mp4, mov, webm, gif...). Photos: "
                    "faces found by BlazeFace, each cropped as the network was trained, everything in the original "
                    "picture's pixels: NAME.json (every face), NAME.png (overlay of the whole picture), "
                    "NAME_face<k>.obj/.ply/.png per face. Videos: faces tracked and smoothed, NAME_<frame>.json per "
                    "frame and NAME_overlay.mp4. With --crops every input is one face crop, as before detection: "
                    "NAME.json, NAME.obj, NAME.ply and NAME.png per image.")
    rec.add_argument("inputs", nargs="+", type=Path, metavar="IMAGES", help="image files, frame folders or videos")
    rec.add_argument("--crops", action="store_true",
                     help="every input is one pre-cropped face: no detection, the whole image is the model's input")
    rec.add_argument("--max-faces", type=int, default=None, help="reconstruct at most this many faces per picture")
    rec.add_argument("--min-score", type=float, default=None,
                     help="face detection score threshold in (0, 1) (default: each detector's own, 0.5 short range, "
                          "0.6 full range)")
    rec.add_argument("--single-pass", action="store_true",
                     help="photos: fit each detected face once, not again in a second crop turned upright by the "
                          "first fit, where the model does not fit it upright itself (version 18 on does; older "
                          "models: half the model calls, a less accurate fit of faces turned in the picture's plane)")
    rec.add_argument("--no-smooth", action="store_true", help="videos: report unfiltered landmarks and pose")
    rec.add_argument("--smooth-min-cutoff", type=float, default=1.0,
                     help="videos: One-Euro cutoff (Hz) of a still face; lower is steadier (default 1.0)")
    rec.add_argument("--smooth-beta", type=float, default=1.0,
                     help="videos: One-Euro speed coefficient (per face size per second); higher follows fast "
                          "motion with less lag (default 1.0)")
    rec.add_argument("--smooth-d-cutoff", type=float, default=1.0,
                     help="videos: One-Euro cutoff (Hz) of the speed estimate (default 1.0)")
    # The video defaults repeat tfface.tracking's (importing it here would load TensorFlow for --help);
    # tests/test_tracking.py checks they agree.
    rec.add_argument("--redetect-every", type=int, default=1,
                     help="videos: run the detector every this many frames, for new faces and to re-anchor the "
                          "tracked crops (0: only when a face is lost; default %(default)s)")
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    rec.add_argument("--model", type=Path, default=None,
                     help=f"exported model version folder (default: {DEFAULT_MODEL.relative_to(REPO_ROOT)} of the repository)")
    rec.add_argument("--backend", choices=("savedmodel", "tflite"), default="savedmodel",
                     help="run the SavedModel with TensorFlow or the TFLite model (default: savedmodel)")
    rec.add_argument("--face-threshold", type=float, default=None,
                     help="face score (share of confident pixels) below which no face is reported (default 0.05)")
    rec.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    rec.add_argument("--intrinsics", metavar="FX,FY,CX,CY",
                     help="known camera intrinsics in original-image pixels: solve only pose and shape "
                          "(needs --weights; inputs are face crops, as with --crops)")
    rec.add_argument("--same-person", action="store_true",
                     help="all inputs show one person: solve one identity with per-image pose and expression "
                          "(needs --weights; inputs are face crops, as with --crops)")
    rec.add_argument("--weights", type=Path, default=None,
                     help="run the Keras model from trained weights instead of an export (required by "
                          "--intrinsics and --same-person)")
    rec.add_argument("--config", default=None, help="with --weights: training config (default: its work folder's)")
    rec.add_argument("--uv-model", type=Path, default=None,
                     help="with --weights: UV-3DMM file (default: its work folder's uv3dmm.npz)")
    rec.set_defaults(func=run_reconstruct)

    exp = subparsers.add_parser(
        "export", help="export trained weights as SavedModel (TF Serving) and TFLite",
        description="Write <out>/<name>/<version>/ with saved_model.pb (signature serving_default: uint8 images), "
                    "assets.extra/model.tflite (built-in ops only), tfface.json and mesh.npz, and (re)write "
                    "<out>/models.config for TF Serving. "
                    "With --tflite FOLDER, add the TFLite model to an existing export instead.")
    exp.add_argument("--weights", type=Path, help="trained weights (<workdir>/train/final.weights.h5)")
    exp.add_argument("--pretrained", action="store_true",
                     help="--weights are a run's pretrained U-Net (<workdir>/pretrain/unet.weights.h5): export "
                          "the network its pretraining left, before any unsupervised step")
    exp.add_argument("--config", default=None,
                     help="training config name or JSON (default: config.json of the weights' work folder)")
    exp.add_argument("--uv-model", type=Path, default=None,
                     help="UV-3DMM file (default: uv3dmm.npz of the weights' work folder)")
    exp.add_argument("--name", help="model name (folder under --out)")
    exp.add_argument("--version", type=int, help="model version, a positive integer")
    exp.add_argument("--out", type=Path, default=None, help="model root (default: savedmodel/ of the repository)")
    exp.add_argument("--num-samples", type=int, default=None,
                     help="pixels in the inference lattice (default: the config's inference_samples, every pixel)")
    exp.add_argument("--locator-resolution", type=int, default=None,
                     help="rebuild the UV-3DMM texel locator at this resolution for a smaller export (sampling "
                          "stays exact; e.g. 160 saves 4 MB for the ICT face; default: keep the trained one)")
    exp.add_argument("--no-tflite", action="store_true", help="skip the TFLite model")
    exp.add_argument("--tflite", type=Path, metavar="FOLDER",
                     help="only convert the SavedModel of an existing export FOLDER to assets.extra/model.tflite")
    exp.set_defaults(func=run_export)


def _work_folder(weights: Path) -> Path | None:
    """The nearest ancestor of ``weights`` holding ``config.json`` (a training work folder)."""
    for folder in weights.resolve().parents:
        if (folder / "config.json").is_file():
            return folder
    return None


def training_sources(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """``(config, uv_model_path)`` of ``args.weights``: the flags, else its work folder's files."""
    from tfface.training.config import load_config

    workdir = _work_folder(args.weights)
    config_source = args.config or (workdir / "config.json" if workdir else None)
    uv_source = args.uv_model or (workdir / "uv3dmm.npz" if workdir else None)
    if config_source is None or uv_source is None:
        raise InputError("cannot find the training work folder of the weights (no config.json above them); "
                         "pass --config and --uv-model")
    if not Path(uv_source).is_file():
        raise ModelFileError(f"UV-3DMM file {uv_source} does not exist; pass --uv-model")
    return load_config(config_source), uv_source


def run_export(args: argparse.Namespace) -> int:
    from tfface import export
    from tfface.paths import REPO_ROOT
    from tfface.serving.config import write_models_config

    if args.tflite:
        print(f"wrote {export.add_tflite(args.tflite)}")
        return 0
    missing = [flag for flag, value in (("--weights", args.weights), ("--name", args.name), ("--version", args.version))
               if value is None]
    if missing:
        raise InputError(f"export needs {', '.join(missing)} (or --tflite FOLDER)")
    config, uv_source = training_sources(args)
    model = export.load_trained_model(args.weights, uv_source, config, args.num_samples, args.locator_resolution,
                                      unet_only=args.pretrained)
    root = args.out or REPO_ROOT / "savedmodel"
    folder = export.export_model(model, root, args.name, args.version, tflite=not args.no_tflite)
    print(f"exported {folder}; TF Serving config {write_models_config(root)}")
    return 0


def _keras_runner(args: argparse.Namespace):
    """The Keras model of ``--weights``, with the geometric variant ``--intrinsics``/``--same-person`` ask for."""
    from tfface import export, inference_variants

    if args.intrinsics and args.same_person:
        raise InputError("--intrinsics and --same-person cannot be combined")
    config, uv_source = training_sources(args)
    options = {}
    if args.intrinsics:
        options = {"geometry": inference_variants.KnownIntrinsicsGeometry}
    elif args.same_person:
        from tfface.morphable.uv3dmm import UVMorphableModel

        identity = config.num_shape or UVMorphableModel.load(uv_source).model.num_shape  # None: all modes
        options = {"geometry": inference_variants.SharedIdentityGeometry, "num_identity": identity}
    return export.KerasInference(export.load_trained_model(args.weights, uv_source, config, **options))


def run_reconstruct(args: argparse.Namespace) -> int:
    from tfface import reconstruct

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    intrinsics = reconstruct.parse_intrinsics(args.intrinsics) if args.intrinsics else None
    if (intrinsics is not None or args.same_person) and args.weights is None:
        raise InputError("--intrinsics and --same-person run the Keras model: pass --weights (and --config/--uv-model "
                         "unless the weights sit in a training work folder)")
    runner = _keras_runner(args) if args.weights else reconstruct.load_runner(args.model, args.backend)
    threshold = reconstruct.DEFAULT_FACE_THRESHOLD if args.face_threshold is None else args.face_threshold
    if not (args.crops or intrinsics is not None or args.same_person):
        return _reconstruct_scenes(args, runner, threshold)
    errors: list[tuple[str, str]] = []
    inputs = reconstruct.iter_inputs(args.inputs, errors)
    batch_size = args.batch_size
    if args.same_person:  # one joint solve over all images of the person
        inputs = list(inputs)
        batch_size = max(1, len(inputs))
    records = reconstruct.reconstruct(inputs, runner, args.out, threshold, batch_size, intrinsics=intrinsics)
    for path, message in errors:
        print(f"tfface reconstruct: skipped {path}: {message}", file=sys.stderr)
    if not records:
        raise InputError("no input could be read")
    faces = sum(r["face_detected"] for r in records)
    print(f"{len(records)} images, {faces} faces, {len(errors)} skipped -> {args.out}")
    return 1 if errors else 0


def _reconstruct_scenes(args: argparse.Namespace, runner, threshold: float) -> int:
    """Photos and videos with face detection (:mod:`tfface.scenes`)."""
    from tfface import reconstruct, scenes
    from tfface.detection.blazeface import FaceDetector
    from tfface.io.images import is_video
    from tfface.tracking import Smoothing

    options = scenes.SceneOptions(threshold, args.max_faces, args.batch_size, upright=not args.single_pass)
    smoothing = Smoothing(args.smooth_min_cutoff, args.smooth_beta, args.smooth_d_cutoff, not args.no_smooth)
    smoothing.filter()  # checks the parameters before any work
    if args.redetect_every < 0:
        raise InputError(f"--redetect-every must be 0 or positive, got {args.redetect_every}")
    detector = FaceDetector(min_score=args.min_score)
    videos = [path for path in args.inputs if not path.is_dir() and is_video(path)]
    errors: list[tuple[str, str]] = []
    records = scenes.reconstruct_pictures(
        reconstruct.iter_inputs([path for path in args.inputs if path not in videos], errors), detector, runner,
        args.out, options)
    frames = []
    for path in videos:
        try:
            frames += scenes.reconstruct_video(path, detector, runner, args.out, smoothing, options, args.redetect_every)
        except InputError as error:
            errors.append((str(path), str(error)))
    for path, message in errors:
        print(f"tfface reconstruct: skipped {path}: {message}", file=sys.stderr)
    if not records and not frames:
        raise InputError("no input could be read")
    faces = sum(sum(face["face_detected"] for face in record["faces"]) for record in records)
    without = sum(not record["face_detected"] for record in records)
    summary = f"{len(records)} pictures, {faces} faces ({without} pictures without a face)"
    if videos:
        tracked = sum(sum(face["face_detected"] for face in record["faces"]) for record in frames)
        summary += f", {len(frames)} video frames, {tracked} faces in them"
    print(f"{summary}, {len(errors)} skipped -> {args.out}")
    return 1 if errors else 0
