"""End-to-end reconstruct latency per image: tfface (Keras, SavedModel, TFLite) and MediaPipe Face Mesh.

For every model (the small default model and the paper's 224 model) and runtime, times per image
``read file -> pad/resize to the model input -> model (batch 1)``, the path ``tfface
reconstruct`` runs per image, on the same image files; then MediaPipe Face Mesh
(``mediapipe==0.10.14``, legacy ``mp.solutions.face_mesh``, static-image mode: face detection +
468-point mesh) on the same files, in the same run. MediaPipe needs protobuf<5, which clashes with
TensorFlow 2.21, so it runs in its own virtualenv through a subprocess: pass its interpreter
with ``--mediapipe-python`` or let ``--create-mediapipe-venv DIR`` create one
(``python3 -m venv DIR && DIR/bin/pip install mediapipe==0.10.14``; needs the package index).

With ``--detect`` the tfface rows time whole photos instead: ``read file -> BlazeFace detection ->
crops framed as in training -> model (the crops of a photo in one batch) -> results mapped back to
the photo`` (:func:`tfface.detection.pipeline.reconstruct_picture`, what ``tfface reconstruct``
runs per photo), the same path MediaPipe's detector + mesh takes; the face count is then the
photos with a face fitted validly.

Images: ``--images DIR`` (JPEG/PNG), else ``--count`` synthetic faces rendered from the UV-3DMM
(``--uv-model``) at 256 x 256. Models: ``--small`` (an exported version folder, default the
repository's ``savedmodel/tfface_ict/1``) and the 224 paper model, exported here with random
weights from ``--uv-model`` (latency does not depend on the weights) unless ``--paper`` names an
exported folder; ``--skip-paper`` leaves it out. The machine may be shared: besides wall-clock
milliseconds the table shows CPU milliseconds per image (process time, all threads). Last, the
worst output difference of the small model's exported runtimes against Keras on the same images
(relative to the output's scale, as the export tests measure it; not for the random-weight 224
model, whose fit is ill-posed).

    python tools/bench_reconstruct.py --uv-model WORK/uv3dmm.npz --mediapipe-python /tmp/mpvenv/bin/python
    python tools/bench_reconstruct.py --detect --images ../shared/data/aflw2000-3d-dev/images --limit 100 \
        --skip-paper --small savedmodel/tfface_ict/20 --mediapipe-python /tmp/mpvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tfface import export
from tfface.io.images import fit_to_square, read_image
from tfface.reconstruct import DEFAULT_MODEL, face_evidence, is_face
from tfface.runtime import use_pooled_cpu_allocator

MEDIAPIPE_VERSION = "0.10.14"

#: Runs in the MediaPipe virtualenv: times Face Mesh per image, prints one JSON line.
MEDIAPIPE_WORKER = r"""
import json, sys, time
import cv2
import mediapipe as mp
paths, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
def run(path):
    image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    return mesh.process(image).multi_face_landmarks
faces = sum(run(p) is not None for p in paths)  # warm-up, and detections
wall, cpu = [], []
for _ in range(repeats):
    for p in paths:
        w, c = time.perf_counter(), time.process_time()
        run(p)
        wall.append(time.perf_counter() - w); cpu.append(time.process_time() - c)
print(json.dumps({"wall": wall, "cpu": cpu, "faces": faces}))
"""


def synthetic_images(uv_model_path: Path, count: int, folder: Path, size: int = 256) -> list[Path]:
    """Render ``count`` synthetic faces to PNG files."""
    from tfface.data.synthetic import SynthesisConfig, SyntheticFaces
    from tfface.morphable.uv3dmm import UVMorphableModel

    faces = SyntheticFaces(UVMorphableModel.load(uv_model_path), SynthesisConfig(image_size=size, max_yaw=30.0))
    paths = []
    for sample in faces.dataset(count, seed=7, batch_size=min(count, 8)):
        paths.append(folder / f"face_{len(paths):03d}.png")
        Image.fromarray((np.clip(sample["image"].numpy(), 0, 1) * 255 + 0.5).astype(np.uint8)).save(paths[-1])
    return paths


def paper_model(uv_model_path: Path, root: Path):
    """The 224 paper configuration with random weights (for latency only), and its export folder.

    Made servable by :func:`export.inference_model`, like a trained network: a float32 copy
    even though the paper configuration trains in mixed bfloat16.
    """
    from tfface.model import FaceModel
    from tfface.training.config import CONFIGS

    model = export.inference_model(FaceModel(str(uv_model_path), CONFIGS["paper"]))
    return model, export.export_model(model, root, "paper", 1)


def time_per_input(one: Callable[[Path], Any], found: Callable[[Any], bool], paths: list[Path],
                   repeats: int) -> dict:
    """Per-input wall and CPU seconds of ``one(path)`` over ``repeats`` passes over ``paths``.

    A first pass warms up (tracing) and counts the inputs whose result is ``found``.

    Returns:
        dict with ``wall`` and ``cpu`` (``repeats * len(paths)`` seconds each) and ``faces``
        (the count found).
    """
    faces = sum(bool(found(one(p))) for p in paths)
    wall, cpu = [], []
    for _ in range(repeats):
        for path in paths:
            w, c = time.perf_counter(), time.process_time()
            one(path)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    return {"wall": wall, "cpu": cpu, "faces": faces}


def time_runner(runner, paths: list[Path], repeats: int) -> dict:
    """:func:`time_per_input` of read -> fit -> model for ``runner``; found: a face by the reconstruct rule."""
    def one(path):
        square, _ = fit_to_square(read_image(path), runner.image_size)
        return square, runner(square[None])

    return time_per_input(one, lambda result: is_face(face_evidence(*result, 0)), paths, repeats)


def time_detect(runner, paths: list[Path], repeats: int) -> dict:
    """:func:`time_per_input` of read -> detect -> crop -> model -> map back for ``runner``; found: a
    photo with a validly fitted face."""
    from tfface.detection.blazeface import FaceDetector
    from tfface.detection.pipeline import reconstruct_picture

    detector = FaceDetector()
    return time_per_input(lambda path: reconstruct_picture(read_image(path), detector, runner),
                          lambda faces: any(face.fit_valid for face in faces), paths, repeats)


def agreement(reference, runner, paths: list[Path]) -> str:
    """Worst ``max |runner - reference| / max(1, max |reference|)`` over the outputs, and which output."""
    worst, name = 0.0, ""
    for path in paths:
        square, _ = fit_to_square(read_image(path), runner.image_size)
        expected, actual = reference(square[None]), runner(square[None])
        for key, value in expected.items():
            error = float(np.abs(actual[key] - value).max() / max(1.0, np.abs(value).max()))
            worst, name = max((worst, name), (error, key))
    return f"{worst:.1e} ({name})"


def mediapipe_python(args) -> str | None:
    if args.mediapipe_python:
        return args.mediapipe_python
    if args.create_mediapipe_venv:
        venv = Path(args.create_mediapipe_venv)
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", f"mediapipe=={MEDIAPIPE_VERSION}"], check=True)
        return str(venv / "bin" / "python")
    return None


def time_mediapipe(python: str, paths: list[Path], repeats: int) -> dict:
    result = subprocess.run([python, "-c", MEDIAPIPE_WORKER, json.dumps([str(p) for p in paths]), str(repeats)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"MediaPipe worker failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _row(name: str, timing: dict, count: int) -> str:
    wall, cpu = 1e3 * np.asarray(timing["wall"]), 1e3 * np.asarray(timing["cpu"])
    return (f"{name:<44} {statistics.median(wall):9.1f} {np.percentile(wall, 90):9.1f} "
            f"{statistics.median(cpu):9.1f} {timing['faces']:>4}/{count}")


def main(argv=None) -> int:
    use_pooled_cpu_allocator()  # as the tfface command runs
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="folder of JPEG/PNG images (default: synthetic faces)")
    parser.add_argument("--count", type=int, default=8, help="synthetic images (default 8)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images of --images")
    parser.add_argument("--detect", action="store_true",
                        help="time whole photos: detection, crops, model, mapping back (exported models only)")
    parser.add_argument("--uv-model", type=Path, help="UV-3DMM file (synthetic images, 224 model export)")
    parser.add_argument("--small", type=Path, default=DEFAULT_MODEL, help="exported small model folder")
    parser.add_argument("--small-weights", type=Path,
                        help="trained weights of the small model, for the Keras row (else that row is skipped)")
    parser.add_argument("--paper", type=Path, help="exported 224 model folder (default: export one, random weights)")
    parser.add_argument("--skip-paper", action="store_true", help="leave out the 224 model")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images (default 3)")
    parser.add_argument("--mediapipe-python", help="python of a virtualenv with mediapipe==0.10.14")
    parser.add_argument("--create-mediapipe-venv", type=Path, help="create (once) that virtualenv here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_reconstruct_"))
    if args.images:
        paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.limit]
    elif args.uv_model:
        paths = synthetic_images(args.uv_model, args.count, work)
    else:
        parser.error("pass --images or --uv-model (to render synthetic faces)")
    models, keras_models = {"small": args.small}, {}
    if args.small_weights and args.uv_model:
        from tfface.training.config import TrainConfig

        meta = json.loads((Path(args.small) / export.EXTRAS / "tfface.json").read_text())
        keras_models["small"] = export.load_trained_model(args.small_weights, args.uv_model,
                                                          TrainConfig(**meta["config"]), meta["num_samples"])
    if not args.skip_paper:
        if args.paper is None and args.uv_model is None:
            parser.error("the 224 model needs --paper or --uv-model (or pass --skip-paper)")
        if args.paper is None:
            keras_models["224"], models["224"] = paper_model(args.uv_model, work / "models")
        else:
            models["224"] = args.paper

    rows, agreements = [], []
    for label, folder in models.items():
        meta = json.loads((Path(folder) / export.EXTRAS / "tfface.json").read_text())
        size = f"{meta['image_size']}px, {meta['num_samples']} samples"
        keras_runner = export.KerasInference(keras_models[label]) if label in keras_models and not args.detect else None
        if keras_runner is not None:
            rows.append(_row(f"tfface {label} ({size}) Keras", time_runner(keras_runner, paths, args.repeats),
                             len(paths)))
        for backend in ("savedmodel", "tflite"):
            if backend == "tflite" and not (Path(folder) / export.EXTRAS / "model.tflite").is_file():
                rows.append(f"tfface {label} tflite: skipped (no {export.EXTRAS}/model.tflite in {folder})")
                continue
            runner = export.ExportedModel(folder, backend)
            timing = (time_detect if args.detect else time_runner)(runner, paths, args.repeats)
            rows.append(_row(f"tfface {label} {backend}{' + BlazeFace' if args.detect else ''}", timing, len(paths)))
            if keras_runner is not None and label == "small":  # random 224 weights: an ill-posed fit, not compared
                agreements.append(f"{label} {backend} vs Keras: worst relative difference {agreement(keras_runner, runner, paths)}")
    python = mediapipe_python(args)
    if python:
        rows.append(_row(f"MediaPipe Face Mesh {MEDIAPIPE_VERSION}", time_mediapipe(python, paths, args.repeats),
                         len(paths)))
    else:
        rows.append("MediaPipe Face Mesh: skipped (pass --mediapipe-python or --create-mediapipe-venv)")
    path = "read + detect + crop + model + map back" if args.detect else "read + resize + model, batch 1"
    print(f"{len(paths)} images x {args.repeats} passes, {path}, ms per image")
    print(f"{'':<44} {'wall p50':>9} {'wall p90':>9} {'cpu p50':>9} {'faces':>9}")
    print("\n".join(rows))
    print("\n".join(agreements))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
