"""How far a network follows a face when the crop window moves inside the whole photo.

On near-frontal AFLW2000-3D dev photos (|yaw| < 30), each face is cropped canonically from its
annotated landmarks (:func:`tfface.detection.crops.landmark_framing`), then again with the crop
window turned, zoomed in or shifted inside the whole 450 x 450 photo: no border and no seam, only
photo. A network that reads the face's placement off the face moves its landmarks with the
window's move ``T`` (crop to moved crop); one that places a canonical face wherever it looks does
not move them at all. The similarity ``S`` taking the first crop's landmarks onto the moved
crop's (least squares over the 68 points, per photo) is compared with ``T``; the table gives the
median over photos of what ``S`` follows of each move (a turn in degrees, a zoom as a factor, a
shift as a fraction of the crop side), for the fitted landmarks and, with a run's network, for
those read directly off the correspondence map. A follower scores the move itself in every
column; a canonical face 0 (x1.00 for the zoom).

With ``--collection FOLDER:FRAMING`` the photos are instead a training collection's, framed as
the training frames them (:class:`tfface.data.photos.PhotoSource`, e.g. the CelebA photos of the
pretraining), and the framed square itself is moved (the same similarity, bilinear, no fill
inside the vignette's disc for moves up to the content radius): what a network follows on the
photos it was trained on, against what it follows on the dev photos.

    python3 tools/placement_probe.py --model savedmodel/tfface_ict/20
    python3 tools/placement_probe.py --workdir runs/photos [--pretrained] [--config C]
    python3 tools/placement_probe.py --workdir runs/photos --pretrained --collection ../shared/data/celeba:celeba
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tfface.data.framing import fit_similarity  # noqa: E402
from tfface.detection import crops  # noqa: E402
from tfface.detection.evaluation import load_dev_pictures  # noqa: E402
from tfface.paths import shared_dir  # noqa: E402

#: name -> (turn in degrees, zoom factor, shift right, shift down as fractions of the side).
MOVES = {
    "turn +20": (20.0, 1.0, 0.0, 0.0),
    "turn -20": (-20.0, 1.0, 0.0, 0.0),
    "zoom x1.25": (0.0, 1.25, 0.0, 0.0),
    "shift right 0.12": (0.0, 1.0, 0.12, 0.0),
    "shift down 0.12": (0.0, 1.0, 0.0, 0.12),
}

#: Crops per network call: one call on all 150 holds every activation at once (about 20 GB with
#: the flip test, which the out-of-memory killer stopped).
BATCH = 25


def moved(framing: crops.Framing, turn: float, zoom: float, right: float, down: float) -> crops.Framing:
    """``framing`` with its window turned by ``turn`` degrees about its centre, its side divided by
    ``zoom`` and its centre shifted by ``(right, down)`` sides in its own upright frame."""
    shifted = crops.anchored(framing, (1.0 / zoom, np.array([right, down])))
    return crops.Framing(shifted.centre, shifted.side, framing.angle + math.radians(turn), framing.method)


def similarity_parameters(matrix: np.ndarray, size: int) -> np.ndarray:
    """``(4,)`` turn (degrees, as the window turns), zoom, and the shift of the crop centre's image
    as a fraction of the side, right and down as the window moves (so a follower of a window
    shifted right by 0.12 scores +0.12)."""
    linear = matrix[:2, :2]
    centre = np.full(2, size / 2)
    shift = (matrix[:2, :2] @ centre + matrix[:2, 2] - centre) / size
    turn = math.degrees(math.atan2(linear[1, 0], linear[0, 0]))
    return np.array([turn, math.sqrt(abs(np.linalg.det(linear))), -shift[0], -shift[1]])


def window_move(move: tuple[float, float, float, float], size: int) -> np.ndarray:
    """``(3, 3)`` similarity of crop pixels taking a crop onto the crop of its window moved by
    ``move`` (:data:`MOVES`' values); the same for every framing."""
    reference = crops.Framing(np.zeros(2), float(size))
    return moved(reference, *move).matrix(size) @ np.linalg.inv(reference.matrix(size))


def followed(run, crops_of, size: int, key: str) -> dict[str, np.ndarray]:
    """Per move, ``(N, 4)`` :func:`similarity_parameters` of what ``run``'s landmarks ``key``
    follow of it (photos whose fit fails in either crop dropped).

    Args:
        run: the network (:data:`tfface.training.photo_evaluation.Runner`).
        crops_of: ``move -> (N, size, size, 3)`` crops (0-255) with their windows moved by
            ``move``, one of :data:`MOVES`' values or ``None`` for the crops themselves.
        size: crop side in pixels.
        key: ``"landmarks68"`` (fitted) or ``"direct_landmarks68"``.
    """
    def landmarks(move):
        images = crops_of(move)
        outs = [run(images[start:start + BATCH]) for start in range(0, len(images), BATCH)]
        points = np.concatenate([np.asarray(out[key], np.float64) for out in outs])
        valid = np.isfinite(points).all(axis=(1, 2))
        if "fit_valid" in outs[0] and key == "landmarks68":
            valid &= np.concatenate([np.asarray(out["fit_valid"]).reshape(-1) for out in outs]).astype(bool)
        return points, valid

    base, base_valid = landmarks(None)
    results = {}
    for name, move in MOVES.items():
        points, valid = landmarks(move)
        keep = np.flatnonzero(base_valid & valid)
        results[name] = np.array([similarity_parameters(fit_similarity(base[i], points[i]), size) for i in keep])
    return results


def dev_crops(folder: Path, count: int, size: int):
    """``move -> crops`` (:func:`followed`) of the first ``count`` near-frontal (|yaw| < 30) dev
    photos, cropped canonically from their annotated landmarks and then with the window moved
    inside the whole photo."""
    dev = load_dev_pictures(folder)
    frontal = np.flatnonzero(np.abs(dev.yaw) < 30)[:count]
    pictures = [dev.pictures[i] for i in frontal]
    framings = [crops.landmark_framing(dev.landmarks[i]) for i in frontal]

    def crops_of(move):
        windows = framings if move is None else [moved(f, *move) for f in framings]
        return np.stack([crops.crop(p, f, size)[0] for p, f in zip(pictures, windows)])

    return crops_of


def collection_crops(source: str, count: int, size: int):
    """``move -> crops`` (:func:`followed`) of ``count`` photos of a training collection
    (``FOLDER:FRAMING``) framed as in training, the framed square moved by the window's move."""
    from tfface.data.augment import transform_batch
    from tfface.data.framing import template_landmarks5
    from tfface.data.photos import PhotoSource, photo_dataset
    from tfface.morphable.loaders import load_default_model

    template5 = template_landmarks5(load_default_model())
    framed = photo_dataset([PhotoSource.parse(source)], size, template5).take(count)
    images = np.stack([image.numpy() for image in framed])

    def crops_of(move):
        moved_images = images
        if move is not None:
            transforms = np.repeat(window_move(move, size)[None].astype(np.float32), len(images), axis=0)
            moved_images = transform_batch({"image": images}, transforms)["image"].numpy()
        return np.clip(np.round(moved_images * 255.0), 0, 255).astype(np.uint8)  # as crops of photos

    return crops_of


def format_rows(label: str, results: dict[str, np.ndarray]) -> str:
    cells = []
    for name, (turn, zoom, right, down) in MOVES.items():
        median = np.median(results[name], axis=0) if len(results[name]) else np.full(4, np.nan)
        value = (median[0] if turn else f"x{median[1]:.2f}" if zoom != 1.0 else median[2] if right else median[3])
        cells.append(f"{value:+.3g}" if not isinstance(value, str) else value)
    return f"{label:<28}" + "".join(f"{c:>18}" for c in cells)


def runner_of(args):
    """``(run, size, keys)``: an exported model's or a run's network."""
    if args.model:
        from tfface.export import ExportedModel

        model = ExportedModel(args.model)
        return model, model.image_size, ["landmarks68"]
    from tfface.training import loop
    from tfface.training.commands import uv_model_for
    from tfface.training.config import load_config
    from tfface.training.photo_evaluation import keras_runner

    config = load_config(args.config)
    _, uv_path = uv_model_for(args.uv_model, Path(args.workdir))
    model = loop.load_trained(uv_path, config, args.workdir, args.weights, pretrained=args.pretrained)
    return keras_runner(model), config.image_size, ["landmarks68", "direct_landmarks68"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an exported model folder")
    parser.add_argument("--workdir", help="a `tfface train` run folder (instead of --model)")
    parser.add_argument("--config", default="photos", help="the run's config (named or JSON)")
    parser.add_argument("--uv-model", help="UV-3DMM file (default: <workdir>/uv3dmm.npz)")
    parser.add_argument("--weights", help="weights file (default: the run's final weights)")
    parser.add_argument("--pretrained", action="store_true", help="the run's pretrained network")
    parser.add_argument("--photos", type=int, default=150, help="photos to move")
    parser.add_argument("--dev", help="AFLW2000-3D dev folder (default: <shared>/data/aflw2000-3d-dev)")
    parser.add_argument("--collection", help="FOLDER:FRAMING of training photos to move instead of dev photos")
    args = parser.parse_args()
    if bool(args.model) == bool(args.workdir):
        parser.error("pass one of --model and --workdir")
    run, size, keys = runner_of(args)
    if args.collection:
        crops_of, what = collection_crops(args.collection, args.photos, size), f"photos of {args.collection}"
    else:
        folder = Path(args.dev) if args.dev else shared_dir() / "data" / "aflw2000-3d-dev"
        crops_of, what = dev_crops(folder, args.photos, size), "near-frontal dev photos"
    print(f"{args.photos} {what}; median over photos of what the landmarks follow of each move")
    print(f"{'landmarks':<28}" + "".join(f"{name:>18}" for name in MOVES))
    window = {name: similarity_parameters(window_move(move, size), size)[None] for name, move in MOVES.items()}
    print(format_rows("(the window's move)", window))
    for key in keys:
        print(format_rows(key, followed(run, crops_of, size, key)))


if __name__ == "__main__":
    main()
