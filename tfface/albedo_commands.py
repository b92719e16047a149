"""``tfface albedo learn``: an albedo basis learnt from real photos (:mod:`tfface.albedo_learning`).

A trained network (``--weights``, with the config and UV-3DMM of its work folder; or an exported
model's, ``--model``) fits ``--count`` photos of the ``--images`` folders, framed as in training
(:func:`tfface.data.photos.photo_dataset`, without the random similarity); every valid fit is
unwrapped into the UV-3DMM's vertices and the principal components written to ``--out``.
``--uv-out`` writes the network's UV-3DMM (same embedding and vertices) with the learnt albedo in
place of its colour model, for ``tfface train --uv-model``; ``--preview`` a PNG of the prior's
mean beside the learnt mean and modes in UV space.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from tfface.errors import InputError

#: Default number of learnt modes (as many as the prior has; kept here so ``tfface --help`` does
#: not import TensorFlow).
DEFAULT_MODES = 40

#: Modes drawn by ``--preview``.
PREVIEW_MODES = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``albedo learn`` to the ``tfface`` command."""
    parser = subparsers.add_parser("albedo", help="albedo basis learnt from real photos", description=__doc__)
    commands = parser.add_subparsers(dest="albedo_command", required=True)
    learn = commands.add_parser(
        "learn", help="fit photos with a trained network, unwrap them into UV space, take principal components",
        description=__doc__)
    network = learn.add_mutually_exclusive_group(required=True)
    network.add_argument("--weights", type=Path, help="trained weights (<workdir>/train/final.weights.h5)")
    network.add_argument("--model", type=Path,
                         help="an exported model's network instead (a version folder, e.g. savedmodel/tfface_ict/20)")
    learn.add_argument("--config", default=None,
                       help="with --weights: training config name or JSON (default: config.json of the weights' "
                            "work folder)")
    learn.add_argument("--uv-model", type=Path, default=None,
                       help="UV-3DMM file (default: uv3dmm.npz of the weights' work folder; with --model, the "
                            "UV-3DMM rebuilt from the export)")
    learn.add_argument("--images", action="append", required=True, metavar="DIR[:FRAMING[:WEIGHT]]",
                       help="a folder of training face photos (repeatable; FRAMING: celeba, aflw-crops, canonical; "
                            "WEIGHT: its share of --count). Never the evaluation photos.")
    learn.add_argument("--count", type=int, required=True, help="photos to fit, mixed from the folders by weight")
    learn.add_argument("--modes", type=int, default=DEFAULT_MODES, help=f"modes to learn (default {DEFAULT_MODES})")
    learn.add_argument("--out", type=Path, required=True, help="learnt albedo file (.npz)")
    learn.add_argument("--uv-out", type=Path, default=None, help="also write the UV-3DMM with the learnt albedo")
    learn.add_argument("--preview", type=Path, default=None, help="also write a PNG of the learnt mean and modes")
    learn.add_argument("--min-photos", type=float, default=None,
                       help="photo equivalents a vertex needs to be learnt fully (default 25; fewer blend into the "
                            "prior's mean)")
    learn.add_argument("--max-residual", type=float, default=None,
                       help="drop pixels whose photometric residual exceeds this (albedo units; default: keep all)")
    learn.add_argument("--batch-size", type=int, default=8, help="photos per fit (default 8)")
    learn.add_argument("--seed", type=int, default=0, help="seed of the photo shuffle and mix")
    learn.set_defaults(func=run_learn)


def _sources(texts: list[str]) -> list:
    """The ``--images`` sources; the shared evaluation photos are refused."""
    from tfface.data.photos import PhotoSource
    from tfface.paths import shared_dir

    sources = [PhotoSource.parse(text) for text in texts]
    evaluation = (shared_dir() / "data" / "aflw2000-3d-dev").resolve()
    for source in sources:
        folder = source.folder.resolve()
        if folder == evaluation or evaluation in folder.parents:
            raise InputError(f"--images {source.folder}: the AFLW2000-3D dev photos are for evaluation only")
    return sources


def run_learn(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from tfface import albedo_learning as al
    from tfface.data.framing import template_landmarks5
    from tfface.data.photos import photo_dataset
    from tfface.export import load_trained_model
    from tfface.export_commands import training_sources
    from tfface.morphable.preview import albedo_tiles, write_panel
    from tfface.morphable.uv3dmm import UVMorphableModel
    from tfface.training.from_export import exported_network, exported_uv_model

    start = time.monotonic()
    if args.count <= 0 or args.modes <= 0 or args.batch_size <= 0:
        raise InputError("--count, --modes and --batch-size must be positive")
    for flag, path in (("--out", args.out), ("--uv-out", args.uv_out), ("--preview", args.preview)):
        if path is not None and not path.parent.is_dir():
            raise InputError(f"{flag}: output folder {path.parent} does not exist")
    if args.model is not None and args.config is not None:
        raise InputError("--config goes with --weights: an exported model (--model) carries its own config")
    sources = _sources(args.images)
    if args.model is not None:
        uv_model = UVMorphableModel.load(args.uv_model) if args.uv_model else exported_uv_model(args.model)
        model = exported_network(args.model, uv_model)
        config = model.config
    else:
        config, uv_source = training_sources(args)
        model = load_trained_model(args.weights, uv_source, config)
        uv_model = UVMorphableModel.load(uv_source)
    batches = photo_dataset(sources, config.image_size, template_landmarks5(uv_model.model),
                            seed=args.seed).take(args.count).batch(args.batch_size)
    accumulator = al.AlbedoAccumulator(uv_model.model.num_vertices)
    with tqdm(total=args.count, unit="photo", desc="fit and unwrap") as bar:
        skipped = al.unwrap_photos(model, batches, accumulator, args.max_residual, bar.update)
    if accumulator.photos <= args.modes:
        raise InputError(f"{accumulator.photos} of the {accumulator.photos + skipped} photos were fitted ({skipped} "
                         f"failed fits); {args.modes} modes need more: pass a larger --count or fewer --modes")
    fitted = time.monotonic()
    options = {} if args.min_photos is None else {"min_photos": args.min_photos}
    with tqdm(total=al.EM_ITERATIONS, unit="round", desc="EM PCA") as bar:
        def report(change: float) -> None:
            bar.update(1)
            bar.set_postfix(change=f"{change:.1e}")

        learnt = al.learn_albedo(*accumulator.arrays(), uv_model.model.albedo_mean, args.modes, progress=report,
                                 model=f"{args.model or args.weights} ({uv_model.model.name}, config {config.name})",
                                 sources=[f"{s.folder}:{s.framing.name}" for s in sources], **options)
    al.save_learnt_albedo(learnt, args.out)
    learnt_uv = dataclasses.replace(uv_model, model=al.with_learnt_albedo(uv_model.model, args.out))
    if args.uv_out is not None:
        learnt_uv.save(args.uv_out)
    if args.preview is not None:
        prior = [(f"prior {caption}", tile) for caption, tile in albedo_tiles(uv_model, 0)]
        write_panel(prior + albedo_tiles(learnt_uv, PREVIEW_MODES), args.preview, columns=2)
    rms = np.sqrt(learnt.variance / uv_model.model.num_vertices)  # RMS over vertices of the colour offset
    print(f"learnt {args.modes} albedo modes from {learnt.photos} photos ({skipped} skipped: failed fit) in "
          f"{fitted - start:.0f} s of fitting and {time.monotonic() - fitted:.0f} s of statistics; "
          f"{np.mean(learnt.support == 1):.0%} of the vertices fully supported; per-vertex RMS sd of the first "
          "modes " + ", ".join(f"{v:.3f}" for v in rms[:5]) + f"; wrote {args.out}"
          + "".join(f", {p}" for p in (args.uv_out, args.preview) if p is not None))
    return 0
