"""``tfface uv3dmm``: build the flattened morphable model (UV-3DMM) once and write it to a file."""

from __future__ import annotations

import argparse
from pathlib import Path

#: Default texel grid size (kept here so ``tfface --help`` does not import TensorFlow).
DEFAULT_RESOLUTION = 320


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("uv3dmm", help="build the flattened 3DMM (UV-3DMM)",
                                   description=__doc__)
    commands = parser.add_subparsers(dest="uv3dmm_command", required=True)
    build = commands.add_parser(
        "build", help="fill holes, Tutte-embed onto the unit square, write the UV-3DMM",
        description="Load a morphable model (ICT-FaceKit npz, Basel Face Model 2017 HDF5 or tfface npz; "
                    "default: the open ICT narrow face with the albedo prior), flatten it and write the "
                    "UV-3DMM file that training, synthesis and evaluation read.")
    build.add_argument("--model", type=Path, default=None,
                       help="morphable model file (default: ICT-FaceKit Light shipped in tfface/assets, narrow face)")
    build.add_argument("--landmarks", type=Path, default=None,
                       help="BFM 2017: file of 68 landmark vertex indices (.npy or text)")
    build.add_argument("--out", type=Path, required=True, help="output UV-3DMM file (.npz)")
    build.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, help="texel grid size S (default 320)")
    build.add_argument("--preview", type=Path, default=None,
                       help="also write a PNG panel: mean shape, basis vectors, albedo, embedding wireframe")
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tfface.errors import InputError
    from tfface.morphable.loaders import load_default_model, load_model
    from tfface.morphable.uv3dmm import BUILD_STAGES, UVMorphableModel

    if args.resolution < 8 or args.resolution > 4096:
        raise InputError(f"--resolution must be in [8, 4096], got {args.resolution}")
    if not args.out.parent.is_dir():
        raise InputError(f"output folder {args.out.parent} does not exist")
    stages = ["load model", *BUILD_STAGES, "save"] + (["preview"] if args.preview else [])
    with tqdm(total=len(stages), desc=stages[0], unit="stage") as bar:
        def done(stage: str) -> None:
            bar.update(1)
            if bar.n < len(stages):
                bar.set_description(stages[bar.n])

        model = load_model(args.model, landmarks=args.landmarks) if args.model else load_default_model()
        done(stages[0])
        uv_model = UVMorphableModel.build(model, resolution=args.resolution, progress=done)
        uv_model.save(args.out)
        done("save")
        if args.preview:
            from tfface.morphable.preview import write_preview

            write_preview(uv_model, args.preview)
            done("preview")
    m = uv_model.model
    print(f"wrote {args.out}: {m.name}, {m.num_vertices} vertices ({m.num_vertices - uv_model.num_original_vertices} "
          f"auxiliary), {len(m.triangles)} triangles, {m.num_shape}+{m.num_expression} shape+expression and "
          f"{m.num_albedo} albedo modes, {args.resolution}x{args.resolution} texels")
    return 0
