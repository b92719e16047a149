"""``tfface data ...``: write synthetic training/evaluation data and look at it.

* ``tfface data synth --count N --out DIR [--model FILE | --uv-model FILE]`` renders ``N`` random
  faces (:mod:`tfface.data.synthetic`) into sharded TFRecords (:mod:`tfface.data.tfrecords`),
  with a progress bar. Read them back with :func:`tfface.data.tfrecords.read_tfrecords`.
* ``tfface data sheet --out sheet.png`` writes a contact sheet of 16 synthetic samples with their
  68 projected landmarks drawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from tfface.errors import InputError


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", type=Path, help="morphable model file (ICT npz, BFM 2017 h5 or project npz); "
                                                  "default: the open ICT-FaceKit Light model")
    group.add_argument("--uv-model", type=Path, help="prebuilt UV-3DMM file (tfface uv3dmm build)")
    parser.add_argument("--landmarks", type=Path, help="68 landmark vertex indices for a BFM file without them")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (sample i depends on seed and i only)")


def _faces(args):
    """The synthetic face source described by the model arguments."""
    from tfface.data.synthetic import SynthesisConfig, SyntheticFaces
    from tfface.morphable.loaders import load_default_model, load_model
    from tfface.morphable.uv3dmm import UVMorphableModel

    if args.uv_model is not None:
        uv_model = UVMorphableModel.load(args.uv_model)
    else:
        model = load_model(args.model, landmarks=args.landmarks) if args.model else load_default_model()
        uv_model = UVMorphableModel.build(model)
    return SyntheticFaces(uv_model, SynthesisConfig(image_size=args.size))


def run_synth(args: argparse.Namespace) -> int:
    from tfface.data.images import image_folder_dataset
    from tfface.data.tfrecords import write_tfrecords

    if args.count <= 0:
        raise InputError(f"--count must be positive, got {args.count}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    faces = _faces(args)
    backgrounds = None
    if args.backgrounds is not None:
        backgrounds, scan = image_folder_dataset(args.backgrounds, args.size, shuffle=True, seed=args.seed)
        print(f"backgrounds: {len(scan.files)} images from {args.backgrounds}, {len(scan.skipped)} unreadable skipped")
    source = faces.dataset(args.count, seed=args.seed, batch_size=args.batch_size, backgrounds=backgrounds)
    with tqdm(total=args.count, unit="img", desc="synth") as bar:
        paths = write_tfrecords(source, args.out, args.count, examples_per_shard=args.shard_size,
                                progress=bar.update)
    print(f"wrote {args.count} samples ({args.size}x{args.size}) in {len(paths)} shards to {args.out}")
    return 0


def run_sheet(args: argparse.Namespace) -> int:
    import numpy as np

    from tfface.data.sheet import contact_sheet

    if args.out.suffix.lower() != ".png":
        raise InputError(f"--out must be a .png file, got {args.out}")
    faces = _faces(args)
    batch = next(iter(faces.dataset(16, seed=args.seed, batch_size=8).batch(16)))
    sheet = contact_sheet(np.asarray(batch["image"]), np.asarray(batch["landmarks68"]), columns=4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote a contact sheet of 16 synthetic faces with 68 landmarks to {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data synth`` and ``data sheet`` to the ``tfface`` command."""
    data = subparsers.add_parser("data", help="synthetic data: render TFRecords, contact sheets")
    commands = data.add_subparsers(dest="data_command", required=True)

    synth = commands.add_parser("synth", help="render random faces with ground truth into sharded TFRecords")
    _add_model_arguments(synth)
    synth.add_argument("--count", type=int, required=True, help="number of samples")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--shard-size", type=int, default=256, help="samples per TFRecord shard (default 256)")
    synth.add_argument("--batch-size", type=int, default=8, help="samples rendered together (default 8)")
    synth.add_argument("--backgrounds", type=Path, help="folder of images used as backgrounds (half of them)")
    synth.set_defaults(func=run_synth)

    sheet = commands.add_parser("sheet", help="contact sheet PNG of 16 synthetic faces with landmarks")
    _add_model_arguments(sheet)
    sheet.add_argument("--out", type=Path, required=True, help="output .png")
    sheet.set_defaults(func=run_sheet, size=160)
