"""Latency and landmark error of an inference option: one network exported with and without it.

The options are the config's inference switches: the flip test (``inference_flip_test``,
:mod:`tfface.flip_test`: the U-Net runs on each crop and on its mirror image, and the fused maps
are fitted once) and the upright pass (``inference_upright_pass``, :mod:`tfface.upright_pass`: each
face is fitted again in its crop turned upright by the first fit's roll). This exports the same
trained weights twice (``--weights``, with the work folder's UV-3DMM unless ``--uv-model``; the
config's other fields as given by ``--config``), once with ``--option`` and once without, then,
on the same face crops of the AFLW2000-3D dev photos (the ground-truth-crop protocol of
``tfface evaluate``):

* times both exports at batch 1, alternating between them crop by crop, so that a shared
  machine slows both alike: p50 wall-clock milliseconds per crop and their ratio;
* prints both box NME tables.

    python tools/bench_inference_option.py --weights RUN/train/final.weights.h5 --config photos \
        [--option inference_upright_pass] [--pretrained] [--limit 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tfface import export
from tfface.data.annotated import load_aflw2000_dev
from tfface.export import ExportedModel
from tfface.paths import shared_dir
from tfface.runtime import use_pooled_cpu_allocator
from tfface.training.config import load_config
from tfface.training.photo_evaluation import evaluate_photos, format_photo_table


#: The options, by name: their labels in the printed tables.
OPTIONS = {"inference_flip_test": "flip test", "inference_upright_pass": "upright pass"}


def export_both(args: argparse.Namespace, root: Path) -> dict[str, Path]:
    """The weights exported without and with ``args.option``: label -> version folder."""
    config = load_config(args.config)
    uv_model = args.uv_model or args.weights.parent.parent / "uv3dmm.npz"
    folders = {}
    for version, on in enumerate((False, True), start=1):
        trained = export.load_trained_model(args.weights, uv_model, config.replace(**{args.option: on}),
                                            unet_only=args.pretrained)
        label = OPTIONS[args.option] if on else "without"
        folders[label] = export.export_model(trained, root, "bench", version, tflite=False)
    return folders


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="trained weights (<workdir>/train/final.weights.h5)")
    parser.add_argument("--config", default="photos", help="training config name or JSON (default: photos)")
    parser.add_argument("--option", choices=sorted(OPTIONS), default="inference_flip_test",
                        help="the inference option compared (default: inference_flip_test)")
    parser.add_argument("--uv-model", type=Path, help="UV-3DMM file (default: the work folder's uv3dmm.npz)")
    parser.add_argument("--pretrained", action="store_true", help="the weights are a U-Net's alone (pretraining)")
    parser.add_argument("--photos", type=Path, default=shared_dir() / "data" / "aflw2000-3d-dev",
                        help="AFLW2000-3D dev folder (default: ../shared/data/aflw2000-3d-dev)")
    parser.add_argument("--limit", type=int, default=200, help="use the first N photos (default 200)")
    parser.add_argument("--timed", type=int, default=50, help="crops timed per export (default 50)")
    args = parser.parse_args(argv)
    use_pooled_cpu_allocator()
    with tempfile.TemporaryDirectory() as folder:
        folders = export_both(args, Path(folder))
        runners = {label: ExportedModel(path) for label, path in folders.items()}
        photos = load_aflw2000_dev(args.photos, load_config(args.config).image_size, limit=args.limit)
        times: dict[str, list[float]] = {label: [] for label in runners}
        for index in range(-2, min(args.timed, len(photos))):  # two warm-up crops
            crop = photos.images[max(index, 0)][None]
            for label, run in runners.items():
                start = time.perf_counter()
                run(crop)
                if index >= 0:
                    times[label].append(time.perf_counter() - start)
        p50 = {label: 1000 * statistics.median(values) for label, values in times.items()}
        option_label = OPTIONS[args.option]
        print(f"latency per crop at batch 1 (p50 of {len(times['without'])}, alternating): "
              + ", ".join(f"{label} {ms:.0f} ms" for label, ms in p50.items())
              + f"; ratio {p50[option_label] / p50['without']:.2f}")
        rows = {label: evaluate_photos(run, photos) for label, run in runners.items()}
        print(format_photo_table(rows, f"{len(photos)} photos"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
