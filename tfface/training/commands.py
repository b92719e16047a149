"""``tfface train``, ``tfface evaluate`` and ``tfface demo`` (the main job).

``tfface demo`` runs the whole method within a time budget: build the default UV-3DMM, read the
photos (../shared/data by default, ``--images`` otherwise; ``--synthetic`` for renders), pretrain
(supplement F), evaluate the pretrained network, train without supervision while tracking
held-out NME against steps, then evaluate again and print the real-photo table (AFLW2000-3D
protocol) beside the synthetic regression table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tfface.errors import InputError

if TYPE_CHECKING:
    from tfface.data.annotated import AnnotatedPhotos
    from tfface.export import ExportedModel
    from tfface.model import FaceModel
    from tfface.morphable.uv3dmm import UVMorphableModel
    from tfface.training.config import TrainConfig
    from tfface.training.photo_evaluation import Runner
    from tfface.training.sources import TrainingData


#: Step count of a demo run bounded by its time budget only.
UNBOUNDED_STEPS = 10_000_000


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="named config (photos: the real-photo recipe, the default; small: the default on "
                             "synthetic renders; paper; tiny) or JSON file")
    parser.add_argument("--workdir", default=None, help="run folder (checkpoints, logs; default: runs/<config name>)")
    parser.add_argument("--data", default=None,
                        help="synthetic TFRecord folder (default: <workdir>/data); with --synthetic or given, "
                             "the run trains on synthetic renders instead of photos")
    parser.add_argument("--uv-model", default=None,
                        help="UV-3DMM file (default: <workdir>/uv3dmm.npz, built from the default model)")


def default_config(args: argparse.Namespace) -> str:
    """``--config``, else the default of the run's data: ``small`` for synthetic renders
    (``--synthetic`` or ``--data``), ``photos`` for real photos."""
    if args.config is not None:
        return args.config
    return "small" if getattr(args, "synthetic", False) or getattr(args, "data", None) else "photos"


def resolve_run(args: argparse.Namespace) -> tuple[TrainConfig, Path, Path]:
    """A command's run: its configuration (with the command line's overrides), run folder and
    synthetic-data folder, printing the U-Net's precision.

    Args:
        args: parsed arguments with ``config``, ``workdir`` and optionally ``data``, ``steps``,
            ``pretrain_steps`` and ``mixed_precision``.

    Returns:
        ``(config, workdir, data_dir)``.
    """
    from tfface.training.config import load_config

    config = load_config(default_config(args))
    overrides = {k: getattr(args, k) for k in ("steps", "pretrain_steps", "mixed_precision")
                 if getattr(args, k, None) is not None}
    config = config.replace(**overrides)
    precision = "mixed bfloat16" if config.uses_mixed_precision() else "float32"
    chosen = "" if config.mixed_precision is not None else " (chosen for this CPU)"
    print(f"U-Net precision: {precision}{chosen}", flush=True)
    workdir = Path(args.workdir or Path("runs") / config.name)
    data_dir = Path(args.data) if args.data else workdir / "data"
    return config, workdir, data_dir


def _add_eval_photos(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-photos", default=None,
                        help="annotated photos for evaluation: an AFLW2000-3D dev folder (landmarks.npz) or "
                             "photos with .pts files (default: <shared>/data/aflw2000-3d-dev where present)")


def _add_photo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", action="append", default=None, metavar="DIR[:FRAMING[:WEIGHT]]",
                        help="a folder of face photos to train on (repeatable); FRAMING is how its faces are "
                             "framed (celeba, aflw-crops, canonical; default canonical). Default: "
                             "<shared>/data/celeba and aflw-crops (set TFFACE_SHARED)")
    parser.add_argument("--aligned", action="append", default=None, metavar="DIR[:FRAMING]",
                        help="roughly aligned photos for pretraining (default: the celeba-framed --images, "
                             "else the first)")
    _add_eval_photos(parser)
    parser.add_argument("--synthetic", action="store_true",
                        help="train and evaluate on synthetic renders (the test harness) instead of photos")


def photo_sources(args: argparse.Namespace) -> tuple[list, list]:
    """The ``(training, aligned)`` photo sources of the command line or the shared data.

    Raises:
        InputError: no photo folder given and none in the shared data, with what to do.
    """
    from tfface.data.framing import CELEBA
    from tfface.data.photos import PhotoSource
    from tfface.paths import shared_dir

    if args.images:
        sources = [PhotoSource.parse(text) for text in args.images]
    else:
        root = shared_dir() / "data"
        sources = [PhotoSource.parse(f"{root / name}:{name}") for name in ("celeba", "aflw-crops")
                   if (root / name).is_dir()]
        if not sources:
            raise InputError(
                f"no photos to train on: {root} has no celeba/ or aflw-crops/ folder. Pass --images DIR "
                "(a folder of face photos, repeatable; DIR:celeba or DIR:aflw-crops says how they are framed), "
                "point TFFACE_SHARED at a folder holding data/celeba, or train on renders with --synthetic")
    if args.aligned:
        aligned = [PhotoSource.parse(text) for text in args.aligned]
    else:
        aligned = [source for source in sources if source.framing is CELEBA] or sources[:1]
    return sources, aligned


def evaluation_photos(args: argparse.Namespace, size: int, limit: int | None = None) -> AnnotatedPhotos | None:
    """The annotated evaluation photos (``--eval-photos`` or the shared AFLW2000-3D dev half), or
    None where there are none."""
    from tfface.data.annotated import load_annotated
    from tfface.paths import shared_dir

    folder = Path(args.eval_photos) if args.eval_photos else shared_dir() / "data" / "aflw2000-3d-dev"
    if not folder.is_dir():
        if args.eval_photos:
            raise InputError(f"--eval-photos {folder}: no such folder")
        return None
    return load_annotated(folder, size, limit)


def training_data(args: argparse.Namespace, config: TrainConfig, uv_model: UVMorphableModel,
                  data_dir: Path) -> TrainingData:
    """The run's :class:`~tfface.training.sources.TrainingData`: renders with ``--synthetic`` or
    ``--data``, photos otherwise (synthetic held-out renders evaluated beside them when
    ``data_dir`` holds them)."""
    from tfface.training.data import prepare_synthetic_data
    from tfface.training.sources import PhotoData, SyntheticData

    if args.synthetic or args.data:
        prepare_synthetic_data(uv_model, config, data_dir)
        return SyntheticData(data_dir)
    sources, aligned = photo_sources(args)
    prepare_synthetic_data(uv_model, config, data_dir, splits=("train", "heldout") if config.synthetic_mix else ("heldout",))
    print("training photos: " + ", ".join(f"{s.folder} ({s.framing.name})" for s in sources), flush=True)
    return PhotoData.for_config(uv_model, config, sources, aligned, evaluation_photos(args, config.image_size),
                                data_dir)


def uv_model_for(path: str | Path | None, workdir: Path,
                 export: str | Path | None = None) -> tuple[UVMorphableModel, Path]:
    """Load the UV-3DMM at ``path``, or make one once into ``<workdir>/uv3dmm.npz``: the model
    ``export`` (an exported version folder) fits where given, else the default model."""
    from tfface.morphable.loaders import load_default_model
    from tfface.morphable.uv3dmm import UVMorphableModel
    from tfface.training.from_export import exported_uv_model

    if path is not None:
        return UVMorphableModel.load(path), Path(path)
    target = workdir / "uv3dmm.npz"
    if not target.exists():
        print(f"rebuilding the UV-3DMM of {export} ..." if export else "building the default UV-3DMM ...", flush=True)
        workdir.mkdir(parents=True, exist_ok=True)
        (exported_uv_model(export) if export else UVMorphableModel.build(load_default_model())).save(target)
    return UVMorphableModel.load(target), target


def run_train(args: argparse.Namespace) -> int:
    from tfface.training import loop
    from tfface.training.distribute import make_strategy
    from tfface.training.from_export import check_network_matches, restore_exported_network

    config, workdir, data_dir = resolve_run(args)
    strategy = make_strategy(args.strategy)
    if strategy.num_replicas_in_sync > 1 and not config.synchronized_batchnorm:
        config = config.replace(synchronized_batchnorm=True)
    if args.init_model:
        check_network_matches(config, args.init_model)
    loop.save_config(config, workdir)
    uv_model, uv_path = uv_model_for(args.uv_model, workdir, args.init_model)
    source = training_data(args, config, uv_model, data_dir)
    model = loop.build_model(uv_path, config, strategy)
    if args.init_model:
        restore_exported_network(model, args.init_model)
        print(f"main training starts from the network of {args.init_model} (no pretraining)", flush=True)
    elif not args.skip_pretrain:
        loop.pretrain(model, config, source, workdir, strategy=strategy, start_from=args.pretrain_from)
    result = loop.train(model, config, source, workdir, time_limit=args.time_limit,
                        evaluate_every=args.evaluate_every, strategy=strategy)
    photos = getattr(source, "evaluation", None)
    if photos is not None:
        from tfface.training.photo_evaluation import format_photo_table

        print(format_photo_table(photo_rows(model, photos, uv_model, "trained"), f"{len(photos)} annotated photos"))
    history = result["history"]
    summary = {"steps": result["steps"], **{k: float(v[-1]) for k, v in history.items() if v},
               "epoch_losses": [float(v) for v in history.get("loss", [])]}
    print(json.dumps(summary))
    return 0


def photo_rows(run: FaceModel | Runner, photos: AnnotatedPhotos, uv_model: UVMorphableModel, label: str) -> dict:
    """The real-photo table rows: the mean shape in the box, then ``label``'s figures."""
    from tfface.data.framing import template_landmarks68
    from tfface.training.photo_evaluation import evaluate_photos, mean_shape_in_box

    return {"mean shape in box": mean_shape_in_box(photos, template_landmarks68(uv_model.model)),
            label: evaluate_photos(run, photos)}


def write_photo_sheet(model: ExportedModel | FaceModel, photos: AnnotatedPhotos, path: str | Path) -> None:
    """Write the contact sheet (:mod:`tfface.training.photo_sheet`) of 16 of ``photos`` spread over
    yaw, as ``model`` (an exported model or a FaceModel) reconstructs them."""
    from tfface.export import ExportedModel, KerasInference
    from tfface.training.photo_sheet import photo_sheet, spread_over_yaw

    run = model if isinstance(model, ExportedModel) else KerasInference(model)
    indices = spread_over_yaw(photos, min(16, len(photos)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    photo_sheet(run, photos, indices).save(path)
    print(f"wrote the panels of {len(indices)} photos (ground truth red, fit green) to {path}")


def run_evaluate(args: argparse.Namespace) -> int:
    from tfface.training import data, loop
    from tfface.training.evaluation import evaluate_batches, format_table
    from tfface.training.photo_evaluation import format_photo_table

    config, workdir, data_dir = resolve_run(args)
    dataset = args.dataset or ("synthetic" if args.data else "photos")
    if args.model:
        from tfface.export import ExportedModel

        model = ExportedModel(args.model, args.backend)
        size, label = model.image_size, f"exported {Path(args.model).name}"
        uv_model, _ = uv_model_for(args.uv_model, workdir)
    else:
        uv_model, uv_path = uv_model_for(args.uv_model, workdir)
        model = loop.load_trained(uv_path, config, workdir, args.weights, pretrained=args.pretrained)
        size, label = config.image_size, "pretrained" if args.pretrained else "trained"
    if dataset == "photos":
        photos = evaluation_photos(args, size, args.limit)
        if photos is None:
            raise InputError("no annotated photos: pass --eval-photos DIR (an AFLW2000-3D dev folder or photos "
                             "with .pts files) or set TFFACE_SHARED")
        print(format_photo_table(photo_rows(model, photos, uv_model, label), f"{len(photos)} photos"))
        if args.sheet:
            write_photo_sheet(model, photos, args.sheet)
        return 0
    if args.model:
        raise InputError(f"--model evaluates on photos only, not on --dataset {dataset}")
    if dataset == "synthetic":
        batches = data.heldout_batches(data_dir, 25, limit=args.limit)
        results = evaluate_batches(model, batches, uv_model)
    else:
        from tfface.data.tfds_sources import aflw2k3d_dataset

        dataset = aflw2k3d_dataset(size=config.image_size, data_dir=args.tfds_dir)
        if args.limit:
            dataset = dataset.take(args.limit)
        results = evaluate_batches(model, dataset.batch(25))
    print(format_table({dataset: results}))
    return 0


def _curve(evaluations: list[dict], photos_key: str | None) -> str:
    """Periodic evaluations as text: step, real-photo box NME and yaw-bin mean, synthetic NME."""
    lines = [f"{'step':>8} {'photos':>8} {'yaw-bins':>9} {'synth68':>8} {'direct68':>9}"]
    for entry in evaluations:
        cells = [entry.get(f"{photos_key}/nme", float("nan")), entry.get(f"{photos_key}/nme_yaw_mean", float("nan")),
                 entry.get("nme68", float("nan")), entry.get("direct_nme68", float("nan"))]
        lines.append(f"{entry['step']:>8d} " + " ".join(f"{100 * v:{w}.2f}" for v, w in zip(cells, (8, 9, 8, 9))))
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    """The main job: photos (or renders), pretraining, bounded training with NME-vs-steps, tables."""
    from tfface.training import data, loop
    from tfface.training.evaluation import evaluate_batches, fit_floor, format_table
    from tfface.training.photo_evaluation import evaluate_photos, format_photo_table

    start = time.monotonic()
    config, workdir, data_dir = resolve_run(args)
    loop.save_config(config, workdir)
    uv_model, uv_path = uv_model_for(args.uv_model, workdir)
    source = training_data(args, config, uv_model, data_dir)
    photos = getattr(source, "evaluation", None)
    model = loop.build_model(uv_path, config)
    loop.pretrain(model, config, source, workdir, time_limit=60.0 * args.pretrain_minutes)
    heldout = lambda: data.heldout_batches(data_dir, 25)  # noqa: E731
    rows = {"pretrained": evaluate_batches(model, heldout(), uv_model)}
    photo_table = photo_rows(model, photos, uv_model, "pretrained") if photos is not None else {}
    if photo_table:
        print(format_photo_table(photo_table, f"{len(photos)} annotated photos"), flush=True)
    print(format_table(rows), flush=True)
    remaining = 60.0 * args.minutes - (time.monotonic() - start) - 120.0
    if remaining <= 0:
        raise InputError(f"--minutes {args.minutes} leaves no time for training after data and pretraining")
    # Train for the rest of the budget unless --steps caps the run.
    budget_config = config if args.steps is not None else config.replace(steps=UNBOUNDED_STEPS)
    result = loop.train(model, budget_config, source, workdir, time_limit=remaining,
                        evaluate_every=args.evaluate_every)
    rows["trained"] = evaluate_batches(model, heldout(), uv_model)
    if photo_table:
        photo_table["trained"] = evaluate_photos(model, photos)
    photos_key = f"photos/{next(iter(photos.annotations))}" if photos is not None else None
    print("\nheld-out NME (%) against main-training steps (photos: box NME; synth68: synthetic renders, "
          "% inter-ocular):")
    print(_curve(result["evaluations"], photos_key))
    floor = fit_floor(model, heldout())
    print(f"\nsteps trained: {result['steps']}, wall time {(time.monotonic() - start) / 60:.1f} min\n")
    if photo_table:
        print(format_photo_table(photo_table, f"{len(photos)} annotated photos") + "\n")
    print("synthetic held-out renders (the regression harness):")
    print(format_table(rows))
    print(f"fit floor: fed ground-truth maps, the trained model's fit scores 68-landmark NME "
          f"{100 * floor['nme68']:.2f}% (what a perfect U-Net would leave)")
    (workdir / "results.json").write_text(json.dumps({"table": rows, "photos": photo_table,
                                                       "curve": result["evaluations"], "steps": result["steps"],
                                                       "fit_floor": floor}, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate`` and ``demo`` to the ``tfface`` command."""
    train = subparsers.add_parser("train", help="pretrain and train the network (resumable)")
    _add_common(train)
    train.add_argument("--strategy", default="default", choices=("default", "mirrored", "multiworker"),
                       help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    train.add_argument("--steps", type=int, default=None, help="main-training steps (overrides the config)")
    train.add_argument("--pretrain-steps", type=int, default=None, help="pretraining steps (overrides)")
    train.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed bfloat16 U-Net (default: the config's; small and paper: "
                            "on where the CPU computes bfloat16 natively)")
    start = train.add_mutually_exclusive_group()
    start.add_argument("--skip-pretrain", action="store_true", help="start the main training from scratch")
    start.add_argument("--init-model", default=None, metavar="FOLDER",
                       help="start the main training from an exported model's network (a version folder, e.g. "
                            "savedmodel/tfface_ict/20) instead of pretraining; without --uv-model the run fits the "
                            "UV-3DMM rebuilt from the export (fine-tune the shipped network on your photos)")
    start.add_argument("--pretrain-from", default=None, metavar="WEIGHTS",
                       help="continue the pretraining from these U-Net weights (another run's "
                            "pretrain/unet.weights.h5) for --pretrain-steps instead of starting it afresh")
    train.add_argument("--time-limit", type=float, default=None, help="stop the main training after SECONDS")
    train.add_argument("--evaluate-every", type=int, default=None, help="held-out NME every N steps")
    _add_photo_options(train)
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("evaluate", help="landmark NME and dense errors on held-out data")
    _add_common(evaluate)
    evaluate.add_argument("--weights", default=None, help="weights file (default: <workdir>/train/final.weights.h5)")
    evaluate.add_argument("--dataset", default=None, choices=("photos", "synthetic", "aflw2k3d"),
                          help="photos: annotated real photos (--eval-photos; AFLW2000-3D protocol; the default "
                               "without --data); synthetic: held-out renders (the default with --data); "
                               "aflw2k3d: the tfds dataset")
    _add_eval_photos(evaluate)
    evaluate.add_argument("--model", default=None, help="evaluate an exported model folder instead of --workdir's")
    evaluate.add_argument("--sheet", default=None, metavar="PNG",
                          help="with photos: also write a contact sheet of 16 of them (spread over yaw) with the "
                               "reconstruction, correspondence, confidence and landmarks (truth red, fit green)")
    evaluate.add_argument("--pretrained", action="store_true",
                          help="evaluate the run's pretrained network (pretrain/unet.weights.h5)")
    evaluate.add_argument("--backend", default="savedmodel", choices=("savedmodel", "tflite"),
                          help="runtime of --model")
    evaluate.add_argument("--tfds-dir", default=None, help="tensorflow-datasets folder for aflw2k3d")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate at most N images")
    evaluate.set_defaults(func=run_evaluate)

    demo = subparsers.add_parser("demo", help="the main job: data, pretraining, bounded training, table")
    _add_common(demo)
    demo.add_argument("--minutes", type=float, default=60.0, help="total time budget")
    demo.add_argument("--pretrain-minutes", type=float, default=8.0, help="pretraining time budget")
    demo.add_argument("--evaluate-every", type=int, default=1000, help="held-out NME every N training steps")
    demo.add_argument("--steps", type=int, default=None,
                      help="stop the main training after N steps (default: train until the time budget ends)")
    _add_photo_options(demo)
    demo.set_defaults(func=run_demo)
