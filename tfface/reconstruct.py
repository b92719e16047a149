"""The reconstruct job on face crops: images, frame folders or videos -> mesh, landmarks, pose JSON and panel.

Every input image is one face crop (``tfface reconstruct --crops``; whole photos and videos, with
face detection, are :mod:`tfface.scenes`'s, which judges each detected face by the same
:func:`no_face_reason`). For every input image (every frame of a video or frame folder) ``NAME``,
the output folder gets

* ``NAME.json``: landmarks (68 and 5), head pose, camera ``K, R, t``, coefficients, lighting, the
  face score and the fit's status (:mod:`tfface.io.records`); without a face, ``face_detected:
  false`` and the ``reason``;
* ``NAME.obj`` and ``NAME.ply``: the fitted mesh with per-vertex albedo colours (only when a
  face is detected);
* ``NAME.png``: the six-tile panel of :mod:`tfface.visualize`.

No face detector is involved here: the network's confidence (geometric x photometric, the product that
selects the fitted pixels in training) says whether the image holds a face, and the fit must have
succeeded. A face is reported when

* ``face_score`` (the share of pixels with that confidence > 0.5) reaches ``face_threshold``
  (else the ``reason`` is ``low_face_score``),
* the image varies inside that confident region (``face_contrast``, the standard deviation of
  luminance there, reaches :data:`MIN_FACE_CONTRAST`: a uniform region has nothing the photometric
  fit could explain; else ``low_contrast``),
* and the fit is valid (``fit_status`` 0, :func:`tfface.model.fit_validity`: the solve was well
  posed, else ``ill_posed_fit``, and the camera plausible and every landmark near the image, else
  ``implausible_camera``; for an export older than the rule,
  :func:`tfface.export.with_fit_validity` applies it on top of the export's own).

Otherwise the JSON records ``face_detected: false`` with the ``reason`` and no mesh is written,
rather than inventing one. Images are padded to a square and resized to the model's input size
(:func:`tfface.io.images.fit_to_square`); results are mapped back to original pixels.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from tfface.errors import InputError
from tfface.export import FACE_PIXEL_CONFIDENCE, ExportedModel, KerasInference
from tfface.model import FIT_OK, FIT_STATUS_NAMES
from tfface.io import images as io_images
from tfface.io.mesh import write_obj, write_ply
from tfface.io.records import face_record, write_json
from tfface.paths import DEFAULT_MODEL
from tfface.visualize import panel

#: Default ``face_score`` threshold (share of confident pixels) below which no face is reported.
DEFAULT_FACE_THRESHOLD = 0.05

#: Smallest luminance standard deviation (in [0, 1] units) of the confident region of a face.
MIN_FACE_CONTRAST = 0.02


def face_evidence(image: np.ndarray, outputs: dict[str, np.ndarray], index: int) -> dict[str, float]:
    """``face_score``, ``face_contrast`` and ``fit_status`` of image ``index`` (``image``: its
    (S, S, 3) uint8 model input; ``outputs`` with ``fit_status``, see
    :func:`tfface.export.with_fit_validity`)."""
    confident = np.prod(outputs["confidence"][index], axis=-1) > FACE_PIXEL_CONFIDENCE  # joint, as face_score
    luminance = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    return {"face_score": float(outputs["face_score"][index]),
            "face_contrast": float(luminance[confident].std()) if confident.any() else 0.0,
            "fit_status": float(outputs["fit_status"][index])}


def no_face_reason(evidence: dict[str, float], face_threshold: float = DEFAULT_FACE_THRESHOLD) -> str | None:
    """Why :func:`face_evidence` shows no face (see the module docstring), or None for a face."""
    if not evidence["face_score"] >= face_threshold:
        return "low_face_score"
    if not evidence["face_contrast"] >= MIN_FACE_CONTRAST:
        return "low_contrast"
    status = int(evidence["fit_status"])
    return None if status == FIT_OK else FIT_STATUS_NAMES[status]


def is_face(evidence: dict[str, float], face_threshold: float = DEFAULT_FACE_THRESHOLD) -> bool:
    """The detection rule on :func:`face_evidence`: no :func:`no_face_reason`."""
    return no_face_reason(evidence, face_threshold) is None


@dataclasses.dataclass(frozen=True)
class InputImage:
    """One image to reconstruct: output ``name`` (file stem, ``stem_000012`` for frames) and pixels."""

    name: str
    pixels: np.ndarray


def iter_inputs(paths: Iterable[str | Path], errors: list[tuple[str, str]]) -> Iterator[InputImage]:
    """Yield the images of ``paths`` (image files, frame folders, videos) as ``(H, W, 3)`` uint8.

    Unreadable inputs are appended to ``errors`` as ``(path, message)`` and skipped.
    """
    for path in map(Path, paths):
        try:
            if path.is_dir():
                for frame in io_images.frame_folder(path):
                    try:
                        yield InputImage(f"{path.name}_{frame.stem}", io_images.read_image(frame))
                    except InputError as error:
                        errors.append((str(frame), str(error)))
            elif io_images.is_video(path):
                for i, frame in enumerate(io_images.read_video_frames(path)):
                    yield InputImage(f"{path.stem}_{i:06d}", frame)
            else:
                yield InputImage(path.stem, io_images.read_image(path))
        except InputError as error:
            errors.append((str(path), str(error)))


def _batches(items: Iterator[InputImage], size: int) -> Iterator[list[InputImage]]:
    batch: list[InputImage] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... if already in ``used``; the result is added to ``used``."""
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate


def reconstruct(images: Iterable[InputImage], runner: ExportedModel | KerasInference, out: str | Path,
                face_threshold: float = DEFAULT_FACE_THRESHOLD, batch_size: int = 8, tile_size: int = 256,
                progress: bool = True, intrinsics: np.ndarray | None = None) -> list[dict]:
    """Reconstruct ``images`` with ``runner`` and write the per-image files into ``out``.

    Args:
        images: the inputs (e.g. from :func:`iter_inputs`).
        runner: an :class:`~tfface.export.ExportedModel` or :class:`~tfface.export.KerasInference`
            (any callable returning their outputs, ``fit_status`` included).
        out: output folder (created).
        face_threshold: ``face_score`` below which no face is reported.
        batch_size: images per model call (for a shared-identity model: the images of one person
            solved together).
        tile_size: panel tile side in pixels.
        progress: show a tqdm progress bar.
        intrinsics: known ``(3, 3)`` camera intrinsics in original-image pixels (same for every
            image); needs a :class:`~tfface.export.KerasInference` runner of a model with
            :class:`~tfface.inference_variants.KnownIntrinsicsGeometry`.

    Returns:
        The JSON records, in input order.
    """
    if not 0.0 <= face_threshold <= 1.0:
        raise InputError(f"face threshold must lie in [0, 1], got {face_threshold}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    triangles = runner.mesh.triangles
    records, used = [], set()
    bar = tqdm(desc="reconstruct", unit="image", disable=not progress, file=sys.stderr)
    for batch in _batches(iter(images), batch_size):
        fitted = [io_images.fit_to_square(item.pixels, runner.image_size) for item in batch]
        squares = np.stack([square for square, _ in fitted])
        if intrinsics is None:
            outputs = runner(squares)
        else:  # original pixels -> model-input pixels: K_model = A^-1 K with A = fit.matrix()
            outputs = runner(squares, intrinsics=np.stack([np.linalg.solve(fit.matrix(), intrinsics)
                                                           for _, fit in fitted]))
        for i, (item, (square, fit)) in enumerate(zip(batch, fitted)):
            name = unique_name(item.name, used)
            evidence = face_evidence(square, outputs, i)
            reason = no_face_reason(evidence, face_threshold)
            record = face_record(outputs, i, fit, item.name, reason is None, {**evidence, "face_threshold": face_threshold})
            if reason is not None:
                record["reason"] = reason
            write_json(out / f"{name}.json", record)
            if record["face_detected"]:
                vertices, colours = outputs["vertices"][i], outputs["vertex_albedo"][i]
                write_obj(out / f"{name}.obj", vertices, triangles, colours)
                write_ply(out / f"{name}.ply", vertices, triangles, colours)
            picture = panel(square, outputs, i, triangles, record["face_detected"], tile_size)
            Image.fromarray(picture).save(out / f"{name}.png")
            records.append(record)
        bar.update(len(batch))
    bar.close()
    return records


def parse_intrinsics(text: str) -> np.ndarray:
    """``"fx,fy,cx,cy"`` (original-image pixels) -> ``(3, 3)`` intrinsics matrix."""
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError as error:
        raise InputError(f"intrinsics must be 'fx,fy,cx,cy' (four numbers), got {text!r}") from error
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise InputError(f"intrinsics need finite values and positive focal lengths, got {text!r}")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def load_runner(model: str | Path | None = None, backend: str = "savedmodel") -> ExportedModel:
    """The exported model at ``model`` (default :data:`DEFAULT_MODEL`), run by ``backend``."""
    return ExportedModel(Path(model) if model else DEFAULT_MODEL, backend)
