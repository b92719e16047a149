"""``tfface self-label``: label unlabelled training photos with a trained network's own fits."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfface.errors import InputError
from tfface.training.commands import photo_sources, resolve_run, uv_model_for


def run_self_label(args: argparse.Namespace) -> int:
    from tfface.data.framing import template_landmarks5
    from tfface.data.photos import photo_dataset
    from tfface.training.self_labels import label_photo_stream

    if args.count < 1:
        raise InputError(f"--count must be at least 1, got {args.count}")
    if not args.turn_gain > 0:
        raise InputError(f"--turn-gain must be positive, got {args.turn_gain}")
    if args.model:
        from tfface.training.from_export import exported_network, exported_uv_model

        network = exported_network(args.model, exported_uv_model(args.model))
    else:
        from tfface.training.loop import load_trained

        config, workdir, _ = resolve_run(args)
        _, uv_path = uv_model_for(args.uv_model, workdir)
        network = load_trained(uv_path, config, workdir, args.weights)
    sources, _ = photo_sources(args)
    photos = photo_dataset(sources, network.config.image_size, template_landmarks5(network.uv_model.model),
                           seed=args.seed)
    labelled = label_photo_stream(network, photos, args.count, args.out, turn_gain=args.turn_gain)
    print(f"{labelled} of {args.count} photos labelled into {args.out}; train on them with the config field "
          f'"self_labels": "{Path(args.out).resolve()}"', flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``self-label`` to the ``tfface`` command."""
    parser = subparsers.add_parser(
        "self-label", help="label training photos with a trained network's fits, for a further pretraining "
                           "(resumable)")
    parser.add_argument("--config", default=None, help="the trained run's config (named or JSON file)")
    parser.add_argument("--workdir", default=None, help="the trained run's folder (default: runs/<config name>)")
    parser.add_argument("--uv-model", default=None, help="the run's UV-3DMM (default: <workdir>/uv3dmm.npz)")
    parser.add_argument("--model", default=None, metavar="FOLDER",
                        help="label with an exported model (a version folder) instead of --workdir's trained network")
    parser.add_argument("--weights", default=None, help="weights file (default: <workdir>/train/final.weights.h5)")
    parser.add_argument("--count", type=int, default=6000, help="photos to fit (failed fits are left out)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the photos' shuffle")
    parser.add_argument("--out", required=True, metavar="NPZ", help="the labelled photos' file")
    parser.add_argument("--turn-gain", type=float, default=1.0, metavar="G",
                        help="render each label's head turned to G times its fitted azimuth (the fits turn real "
                             "heads too little; BUILD.md, 'Labels turned further'). Default 1: as fitted")
    parser.add_argument("--images", action="append", default=None, metavar="DIR[:FRAMING[:WEIGHT]]",
                        help="a folder of face photos to label (repeatable), framed as `tfface train --images` "
                             "says. Default: <shared>/data/celeba and aflw-crops (set TFFACE_SHARED)")
    parser.set_defaults(func=run_self_label, aligned=None, data=None)
