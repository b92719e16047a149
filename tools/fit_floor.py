"""The fit's floor: the landmark NME the in-network 3DMM fit leaves when fed perfect maps.

Builds ground-truth maps (exact correspondence and depth, confidence 1 on the face) of held-out
synthetic faces, runs FaceModel's sampling and geometric solve on them and prints the fitted
68- and 5-landmark NME, once per truncation of the 3DMM, over the images whose fit is valid, with
the failed fits counted beside them (:func:`tfface.training.metrics.summarise_errors`). No network is involved: this is the
error a perfect U-Net would still get, the lower bound of ``tfface evaluate``'s fitted NME.

Usage::

    python3 tools/fit_floor.py --workdir runs/small [--modes 40,20 all] [--limit 100]

(``--workdir`` is a ``tfface train``/``demo`` run folder: its ``config.json``, ``uv3dmm.npz`` and
``data/``.) The camera-translation regulariser is off (``--translation-weight``), as at the end
of training; ``--trained`` also loads the run's adaptive regularisation state.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfface.training import data, loop  # noqa: E402
from tfface.training.config import load_config  # noqa: E402
from tfface.training.evaluation import fit_floor  # noqa: E402


def parse_modes(text: str) -> tuple[int | None, int | None]:
    """``"40,20"`` -> (40, 20) shape and expression modes; ``"all"`` -> (None, None)."""
    if text == "all":
        return None, None
    shape, expression = (int(part) for part in text.split(","))
    return shape, expression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="run folder (config.json, uv3dmm.npz, data/)")
    parser.add_argument("--modes", nargs="+", default=["40,20", "all"], help="SHAPE,EXPRESSION or all")
    parser.add_argument("--limit", type=int, default=100, help="held-out images")
    parser.add_argument("--translation-weight", type=float, default=0.0, help="camera-translation regulariser")
    parser.add_argument("--trained", action="store_true", help="load train/final.weights.h5 (regulariser state)")
    args = parser.parse_args()
    base = load_config(args.workdir / "config.json")
    print(f"{'shape':>6} {'expr':>5} {'samples':>8} {'fitted68 %':>11} {'fitted5 %':>10} {'images':>7} {'failed':>7}")
    for text in args.modes:
        num_shape, num_expression = parse_modes(text)
        config = base.replace(num_shape=num_shape, num_expression=num_expression)
        model = loop.build_model(args.workdir / "uv3dmm.npz", config)
        if args.trained:
            model.load_weights(args.workdir / "train" / "final.weights.h5")
        model.geometric.translation_weight.assign(args.translation_weight)
        result = fit_floor(model, data.heldout_batches(args.workdir / "data", 25, limit=args.limit))
        fitted = model.uv_model.model
        print(f"{fitted.num_shape:>6} {fitted.num_expression:>5} {config.num_samples:>8} "
              f"{100 * result['nme68']:11.2f} {100 * result['nme5']:10.2f} {result['count']:>7} {result['failed']:>7}",
              flush=True)


if __name__ == "__main__":
    main()
