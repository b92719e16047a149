"""``tfface reconstruct`` and ``tfface export``: the inference side of the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfface.errors import InputError, ModelFileError


def register(subparsers) -> None:
    """Add the ``reconstruct`` and ``export`` sub-commands."""
    rec = subparsers.add_parser(
        "reconstruct", help="reconstruct faces: mesh (OBJ, PLY), landmarks and pose (JSON), panel (PNG)",
        description="Reconstruct every face image, frame folder or video (frame by frame). Writes NAME.json, "
                    "NAME.obj, NAME.ply and NAME.png per image into --out.")
    rec.add_argument("inputs", nargs="+", type=Path, metavar="IMAGES", help="image files, frame folders or videos")
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    rec.add_argument("--model", type=Path, default=None,
                     help="exported model version folder (default: savedmodel/tfface_ict/1 of the repository)")
    rec.add_argument("--backend", choices=("savedmodel", "tflite"), default="savedmodel",
                     help="run the SavedModel with TensorFlow or the TFLite model (default: savedmodel)")
    rec.add_argument("--face-threshold", type=float, default=None,
                     help="face score (share of confident pixels) below which no face is reported (default 0.05)")
    rec.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    rec.set_defaults(func=run_reconstruct)

    exp = subparsers.add_parser(
        "export", help="export trained weights as SavedModel (TF Serving) and TFLite",
        description="Write <out>/<name>/<version>/ with saved_model.pb (signature serving_default: uint8 images), "
                    "assets.extra/model.tflite (built-in ops only), tfface.json and mesh.npz. "
                    "With --tflite FOLDER, add the TFLite model to an existing export instead.")
    exp.add_argument("--weights", type=Path, help="trained weights (<workdir>/train/final.weights.h5)")
    exp.add_argument("--config", default=None,
                     help="training config name or JSON (default: config.json of the weights' work folder)")
    exp.add_argument("--uv-model", type=Path, default=None,
                     help="UV-3DMM file (default: uv3dmm.npz of the weights' work folder)")
    exp.add_argument("--name", help="model name (folder under --out)")
    exp.add_argument("--version", type=int, help="model version, a positive integer")
    exp.add_argument("--out", type=Path, default=None, help="model root (default: savedmodel/ of the repository)")
    exp.add_argument("--num-samples", type=int, default=None,
                     help="pixels in the inference lattice (default: the training config's num_samples)")
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


def run_export(args: argparse.Namespace) -> int:
    from tfface import export
    from tfface.paths import REPO_ROOT
    from tfface.training.config import load_config

    if args.tflite:
        print(f"wrote {export.add_tflite(args.tflite)}")
        return 0
    missing = [flag for flag, value in (("--weights", args.weights), ("--name", args.name), ("--version", args.version))
               if value is None]
    if missing:
        raise InputError(f"export needs {', '.join(missing)} (or --tflite FOLDER)")
    workdir = _work_folder(args.weights)
    config_source = args.config or (workdir / "config.json" if workdir else None)
    uv_source = args.uv_model or (workdir / "uv3dmm.npz" if workdir else None)
    if config_source is None or uv_source is None:
        raise InputError("cannot find the training work folder of the weights (no config.json above them); "
                         "pass --config and --uv-model")
    if not Path(uv_source).is_file():
        raise ModelFileError(f"UV-3DMM file {uv_source} does not exist; pass --uv-model")
    model = export.load_trained_model(args.weights, uv_source, load_config(config_source), args.num_samples,
                                      args.locator_resolution)
    folder = export.export_model(model, args.out or REPO_ROOT / "savedmodel", args.name, args.version,
                                 tflite=not args.no_tflite)
    print(f"exported {folder}")
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    from tfface import reconstruct

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    runner = reconstruct.load_runner(args.model, args.backend)
    errors: list[tuple[str, str]] = []
    threshold = reconstruct.DEFAULT_FACE_THRESHOLD if args.face_threshold is None else args.face_threshold
    records = reconstruct.reconstruct(reconstruct.iter_inputs(args.inputs, errors), runner, args.out, threshold,
                                      args.batch_size)
    for path, message in errors:
        print(f"tfface reconstruct: skipped {path}: {message}", file=sys.stderr)
    if not records:
        raise InputError("no input could be read")
    faces = sum(r["face_detected"] for r in records)
    print(f"{len(records)} images, {faces} faces, {len(errors)} skipped -> {args.out}")
    return 1 if errors else 0
