"""``tfface train``, ``tfface evaluate`` and ``tfface demo`` (the main job).

``tfface demo`` runs the whole method on a fresh machine within a time budget: build the default
UV-3DMM, synthesise training/held-out/aligned images, pretrain (supplement F), evaluate the
pretrained network, train without supervision while tracking held-out NME against steps, then
evaluate again and print the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tfface.errors import InputError


#: Step count of a demo run bounded by its time budget only.
UNBOUNDED_STEPS = 10_000_000


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="small", help="named config (small, paper, tiny) or JSON file")
    parser.add_argument("--workdir", default="runs/small", help="run folder (checkpoints, logs)")
    parser.add_argument("--data", default=None, help="synthetic TFRecord folder (default: <workdir>/data)")
    parser.add_argument("--uv-model", default=None,
                        help="UV-3DMM file (default: <workdir>/uv3dmm.npz, built from the default model)")


def _resolve(args) -> tuple:
    from tfface.training.config import load_config

    config = load_config(args.config)
    overrides = {k: getattr(args, k) for k in ("steps", "pretrain_steps", "mixed_precision")
                 if getattr(args, k, None) is not None}
    config = config.replace(**overrides)
    precision = "mixed bfloat16" if config.uses_mixed_precision() else "float32"
    chosen = "" if config.mixed_precision is not None else " (chosen for this CPU)"
    print(f"U-Net precision: {precision}{chosen}", flush=True)
    workdir = Path(args.workdir)
    data_dir = Path(args.data) if args.data else workdir / "data"
    return config, workdir, data_dir


def uv_model_for(path: str | Path | None, workdir: Path):
    """Load the UV-3DMM at ``path``, or build the default one once into ``<workdir>/uv3dmm.npz``."""
    from tfface.morphable.loaders import load_default_model
    from tfface.morphable.uv3dmm import UVMorphableModel

    if path is not None:
        return UVMorphableModel.load(path), Path(path)
    target = workdir / "uv3dmm.npz"
    if not target.exists():
        print("building the default UV-3DMM ...", flush=True)
        workdir.mkdir(parents=True, exist_ok=True)
        UVMorphableModel.build(load_default_model()).save(target)
    return UVMorphableModel.load(target), target


def run_train(args) -> int:
    from tfface.training import loop
    from tfface.training.data import prepare_synthetic_data
    from tfface.training.distribute import make_strategy

    config, workdir, data_dir = _resolve(args)
    strategy = make_strategy(args.strategy)
    if strategy.num_replicas_in_sync > 1 and not config.synchronized_batchnorm:
        config = config.replace(synchronized_batchnorm=True)
    loop.save_config(config, workdir)
    uv_model, uv_path = uv_model_for(args.uv_model, workdir)
    prepare_synthetic_data(uv_model, config, data_dir)
    model = loop.build_model(uv_path, config, strategy)
    if not args.skip_pretrain:
        loop.pretrain(model, config, data_dir, workdir, strategy=strategy)
    result = loop.train(model, config, data_dir, workdir, time_limit=args.time_limit,
                        evaluate_every=args.evaluate_every, strategy=strategy)
    history = result["history"]
    summary = {"steps": result["steps"], **{k: float(v[-1]) for k, v in history.items() if v},
               "epoch_losses": [float(v) for v in history.get("loss", [])]}
    print(json.dumps(summary))
    return 0


def run_evaluate(args) -> int:
    from tfface.training import data, loop
    from tfface.training.evaluation import evaluate_batches, format_table

    config, workdir, data_dir = _resolve(args)
    uv_model, uv_path = uv_model_for(args.uv_model, workdir)
    model = loop.load_trained(uv_path, config, workdir, args.weights)
    if args.dataset == "synthetic":
        batches = data.heldout_batches(data_dir, 25, limit=args.limit)
        results = evaluate_batches(model, batches, uv_model)
    else:
        from tfface.data.tfds_sources import aflw2k3d_dataset

        dataset = aflw2k3d_dataset(size=config.image_size, data_dir=args.tfds_dir)
        if args.limit:
            dataset = dataset.take(args.limit)
        results = evaluate_batches(model, dataset.batch(25))
    print(format_table({args.dataset: results}))
    return 0


def run_demo(args) -> int:
    """The main job: data, pretraining, bounded training with NME-vs-steps, final table."""
    from tfface.training import data, loop
    from tfface.training.data import prepare_synthetic_data
    from tfface.training.evaluation import evaluate_batches, fit_floor, format_table

    start = time.monotonic()
    config, workdir, data_dir = _resolve(args)
    loop.save_config(config, workdir)
    uv_model, uv_path = uv_model_for(args.uv_model, workdir)
    prepare_synthetic_data(uv_model, config, data_dir)
    model = loop.build_model(uv_path, config)
    loop.pretrain(model, config, data_dir, workdir, time_limit=60.0 * args.pretrain_minutes)
    heldout = lambda: data.heldout_batches(data_dir, 25)  # noqa: E731
    rows = {"pretrained": evaluate_batches(model, heldout(), uv_model)}
    print(format_table(rows), flush=True)
    remaining = 60.0 * args.minutes - (time.monotonic() - start) - 120.0
    if remaining <= 0:
        raise InputError(f"--minutes {args.minutes} leaves no time for training after data and pretraining")
    # Train for the rest of the budget unless --steps caps the run.
    budget_config = config if args.steps is not None else config.replace(steps=UNBOUNDED_STEPS)
    result = loop.train(model, budget_config, data_dir, workdir, time_limit=remaining,
                        evaluate_every=args.evaluate_every)
    rows["trained"] = evaluate_batches(model, heldout(), uv_model)
    print("\nheld-out NME (%) against main-training steps:")
    print(f"{'step':>8} {'fitted68':>9} {'direct68':>9} {'fitted5':>8} {'direct5':>8}")
    for entry in result["evaluations"]:
        print(f"{entry['step']:>8d} {100 * entry['nme68']:9.2f} {100 * entry['direct_nme68']:9.2f} "
              f"{100 * entry['nme5']:8.2f} {100 * entry['direct_nme5']:8.2f}")
    floor = fit_floor(model, heldout())
    print(f"\nsteps trained: {result['steps']}, wall time {(time.monotonic() - start) / 60:.1f} min\n")
    print(format_table(rows))
    print(f"fit floor: fed ground-truth maps, the trained model's fit scores 68-landmark NME "
          f"{100 * floor['nme68']:.2f}% (what a perfect U-Net would leave)")
    (workdir / "results.json").write_text(json.dumps({"table": rows, "curve": result["evaluations"],
                                                       "steps": result["steps"], "fit_floor": floor}, indent=1))
    return 0


def register(subparsers) -> None:
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
    train.add_argument("--skip-pretrain", action="store_true", help="start the main training from scratch")
    train.add_argument("--time-limit", type=float, default=None, help="stop the main training after SECONDS")
    train.add_argument("--evaluate-every", type=int, default=None, help="held-out NME every N steps")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("evaluate", help="landmark NME and dense errors on held-out data")
    _add_common(evaluate)
    evaluate.add_argument("--weights", default=None, help="weights file (default: <workdir>/train/final.weights.h5)")
    evaluate.add_argument("--dataset", default="synthetic", choices=("synthetic", "aflw2k3d"))
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
    demo.set_defaults(func=run_demo)
