"""Whole photos and videos through ``tfface reconstruct``: every face, in the original picture.

For a photo ``NAME`` (every image of a frame folder is a photo too), the output folder gets

* ``NAME.json`` (:data:`PICTURE_FORMAT`): the picture's size, the detector's settings,
  ``upright_pass`` (whether each face the model did not fit upright itself was fitted again in a
  second crop turned upright by its first fit, :func:`tfface.detection.pipeline.upright_pass`;
  each face's ``upright_fit`` says whether the model did), ``face_detected`` (any face
  reconstructed; else the ``reason``: ``no_face_detected`` or ``no_face_fitted``) and ``faces``,
  one entry per detection, best first: the detector's box, score and keypoints, the crop the
  reported fit came from (centre, side, angle, how it was framed), the model's evidence
  (``face_score``, ``face_contrast``, ``fit_status``, as :func:`tfface.reconstruct.no_face_reason`
  judges it) and, for a face, the landmarks, head pose, camera (``K`` of the original picture),
  coefficients and lighting of :func:`tfface.io.records.fitted_fields`, all in original pixels;
* ``NAME.png``: the whole picture with every face's mesh, landmarks and box (:mod:`tfface.overlay`);
* per face ``k``: ``NAME_face{k}.png``, the six-tile panel of its crop, and for a reconstructed
  face ``NAME_face{k}.obj`` and ``.ply``.

A video ``NAME`` (mp4, mov, webm, mkv, avi, animated GIF...) is followed with
:class:`tfface.tracking.FaceTracker`: per frame ``i`` a ``NAME_{i:06d}.json`` as above whose faces
carry their ``track`` number and smoothed ``landmarks68``, ``landmarks5`` and
``head_pose_degrees`` (the unfiltered values under ``unsmoothed``; the camera and coefficients
are the frame's own), and one overlay video ``NAME_overlay.mp4`` at the input's frame rate.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from tfface.detection.blazeface import FaceDetector
from tfface.detection.pipeline import Face, Runner, reconstruct_picture
from tfface.errors import InputError
from tfface.io import video
from tfface.io.mesh import write_obj, write_ply
from tfface.io.records import fitted_fields, rounded, write_json
from tfface.overlay import FaceDrawing, draw_faces
from tfface.reconstruct import DEFAULT_FACE_THRESHOLD, InputImage, face_evidence, no_face_reason, unique_name
from tfface.tracking import REDETECT_EVERY, FaceTracker, Smoothing, Track
from tfface.visualize import panel

if TYPE_CHECKING:
    from tfface.export import ExportedModel, KerasInference

#: Format tag of a picture's record.
PICTURE_FORMAT = "tfface-picture/1"


@dataclasses.dataclass(frozen=True)
class SceneOptions:
    """Settings of a whole-picture reconstruction.

    Attributes:
        face_threshold: ``face_score`` below which a detected face is not reconstructed.
        max_faces: reconstruct at most this many faces per picture (the best detections).
        batch_size: crops per model call.
        tile_size: panel tile side in pixels.
        progress: show a progress bar.
        upright: fit each face of a picture again in its crop turned upright by its first fit,
            where the model did not do so itself (:func:`tfface.detection.pipeline.upright_pass`;
            videos keep the tracker's crops, turned as the detector turned them,
            :mod:`tfface.tracking`).
    """

    face_threshold: float = DEFAULT_FACE_THRESHOLD
    max_faces: int | None = None
    batch_size: int = 8
    tile_size: int = 256
    progress: bool = True
    upright: bool = True

    def __post_init__(self):
        if not 0.0 <= self.face_threshold <= 1.0:
            raise InputError(f"face threshold must lie in [0, 1], got {self.face_threshold}")
        if self.max_faces is not None and self.max_faces < 1:
            raise InputError(f"--max-faces must be positive, got {self.max_faces}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be positive, got {self.batch_size}")


def _batched(face: Face) -> dict[str, np.ndarray]:
    """The face's outputs as a batch of one."""
    return {name: value[None] for name, value in face.outputs.items()}


def face_entry(face: Face, index: int, face_threshold: float) -> dict:
    """The record of one face of a picture (see the module docstring).

    Args:
        face: the reconstructed face.
        index: its number in the picture (0: best detection).
        face_threshold: ``face_score`` below which it is no face.
    """
    evidence = face_evidence(face.crop, _batched(face), 0)
    reason = no_face_reason(evidence, face_threshold)
    framing = face.framing
    detected_here = face.detection is not None and framing.method != "landmarks"  # tracked crops have none
    entry = {"face": index, "detection": face.detection.as_json() if detected_here else None,
             "crop": {"centre": rounded(framing.centre, 2), "side": round(framing.side, 2),
                      "angle_degrees": round(math.degrees(framing.angle), 3), "framing": framing.method},
             **{name: round(float(value), 5) for name, value in evidence.items()},
             "face_threshold": face_threshold, "face_detected": reason is None}
    if reason is not None:
        entry["reason"] = reason
        return entry
    picture = face.picture
    entry.update(fitted_fields(picture["landmarks68"], picture["landmarks5"], picture["K"], picture["R"], picture["t"],
                               face.outputs))
    return entry


def picture_record(source: str, picture: np.ndarray, entries: list[dict], detector: FaceDetector,
                   options: SceneOptions, upright_pass: bool) -> dict:
    """The record of a whole picture: its size, the detector's settings, whether its faces were
    fitted again turned upright (``upright_pass``) and its faces."""
    record = {"format": PICTURE_FORMAT, "source": source, "width": int(picture.shape[1]),
              "height": int(picture.shape[0]),
              "detector": {"passes": [p.name for p in detector.passes], "fallback": [p.name for p in detector.fallback],
                           "supplement": [p.name for p in detector.supplement], "refine_below": detector.refine_below,
                           "min_score": detector.min_score,
                           "max_faces": options.max_faces},
              "upright_pass": upright_pass,
              "face_detected": any(entry["face_detected"] for entry in entries), "faces": entries}
    if not record["face_detected"]:
        record["reason"] = "no_face_fitted" if entries else "no_face_detected"
    return record


def _drawing(entry: dict, box: np.ndarray, label: str, landmarks68: np.ndarray | None,
             mesh2d: np.ndarray | None) -> FaceDrawing:
    """What the overlay shows of a face: its box and label, and its landmarks and mesh if fitted."""
    if not entry["face_detected"]:
        return FaceDrawing(box, label)
    return FaceDrawing(box, label, landmarks68, mesh2d)


def reconstruct_pictures(images: Iterable[InputImage], detector: FaceDetector,
                         runner: ExportedModel | KerasInference, out: str | Path,
                         options: SceneOptions = SceneOptions()) -> list[dict]:
    """Every face of every picture, written into ``out`` (see the module docstring).

    Args:
        images: the pictures (e.g. from :func:`tfface.reconstruct.iter_inputs`).
        detector: the face detector.
        runner: the model (:data:`tfface.detection.pipeline.Runner`, with ``mesh``).
        out: output folder (created).
        options: thresholds, batch size, panels, progress bar.

    Returns:
        The picture records, in input order.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    triangles = runner.mesh.triangles
    records, used = [], set()
    for item in tqdm(images, desc="reconstruct", unit="image", disable=not options.progress, file=sys.stderr):
        name = unique_name(item.name, used)
        faces = reconstruct_picture(item.pixels, detector, runner, options.max_faces, batch_size=options.batch_size,
                                    upright=options.upright)
        entries = [face_entry(face, k, options.face_threshold) for k, face in enumerate(faces)]
        for k, (face, entry) in enumerate(zip(faces, entries)):
            stem = out / f"{name}_face{k}"
            if entry["face_detected"]:
                vertices, colours = face.outputs["vertices"], face.outputs["vertex_albedo"]
                write_obj(stem.with_suffix(".obj"), vertices, triangles, colours)
                write_ply(stem.with_suffix(".ply"), vertices, triangles, colours)
            tiles = panel(face.crop, _batched(face), 0, triangles, entry["face_detected"], options.tile_size)
            Image.fromarray(tiles).save(stem.with_suffix(".png"))
        record = picture_record(item.name, item.pixels, entries, detector, options, options.upright)
        write_json(out / f"{name}.json", record)
        overlay = draw_faces(item.pixels, [
            _drawing(e, f.detection.box, f"{k}  det {f.detection.score:.2f}  face {e['face_score']:.2f}",
                     f.picture["landmarks68"], f.picture["mesh2d"]) for k, (e, f) in enumerate(zip(entries, faces))])
        Image.fromarray(overlay).save(out / f"{name}.png")
        records.append(record)
    return records


def track_entry(track: Track, face_threshold: float) -> dict:
    """:func:`face_entry` of a tracked face, with its track number and smoothed landmarks and pose."""
    entry = {**face_entry(track.face, track.id, face_threshold), "track": track.id}
    if entry["face_detected"]:
        smoothed = track.smoothed
        entry["unsmoothed"] = {key: entry[key] for key in ("landmarks68", "landmarks5", "head_pose_degrees")}
        entry.update(landmarks68=rounded(smoothed["landmarks68"], 2), landmarks5=rounded(smoothed["landmarks5"], 2),
                     head_pose_degrees={k: round(v, 3) for k, v in smoothed["head_pose_degrees"].items()})
    return entry


def _track_drawing(entry: dict, track: Track) -> FaceDrawing:
    """The overlay of a tracked face: smoothed landmarks and mesh, boxed by its landmarks (or its crop)."""
    if entry["face_detected"]:
        points = track.smoothed["landmarks68"]
        box = np.concatenate([points.min(0), points.max(0)])
        return _drawing(entry, box, f"track {track.id}", points, track.smoothed["mesh2d"])
    return _drawing(entry, track.face.framing.square(), f"track {track.id}", None, None)


def reconstruct_video(path: str | Path, detector: FaceDetector, runner: Runner, out: str | Path,
                      smoothing: Smoothing = Smoothing(), options: SceneOptions = SceneOptions(),
                      redetect_every: int = REDETECT_EVERY) -> list[dict]:
    """Every face of every frame of a video, tracked and smoothed, written into ``out``.

    Args:
        path: the video.
        detector: the face detector.
        runner: the model.
        out: output folder (created).
        smoothing: One-Euro parameters (:class:`tfface.tracking.Smoothing`).
        options: thresholds, progress bar (panels and meshes are not written per frame).
        redetect_every: run the detector every this many frames (new faces, re-anchoring).

    Returns:
        The frame records, in order.

    Raises:
        InputError: a missing, empty, corrupt or frameless video (:mod:`tfface.io.video`).
    """
    path, out = Path(path), Path(out)
    info = video.probe(path)
    out.mkdir(parents=True, exist_ok=True)
    tracker = FaceTracker(detector, runner, info.fps, smoothing, options.max_faces, options.face_threshold,
                          redetect_every)
    records = []
    bar = tqdm(total=info.frames, desc=path.name, unit="frame", disable=not options.progress, file=sys.stderr)
    with video.VideoWriter(out / f"{path.stem}_overlay.mp4", info.fps) as writer:
        for i, frame in enumerate(video.read_frames(path)):
            tracks = tracker(frame)
            entries = [track_entry(track, options.face_threshold) for track in tracks]
            record = {**picture_record(f"{path.stem}_{i:06d}", frame, entries, detector, options, False), "frame": i,
                      "time_s": round(i / info.fps, 4)}
            write_json(out / f"{path.stem}_{i:06d}.json", record)
            writer.write(draw_faces(frame, [_track_drawing(e, t) for e, t in zip(entries, tracks)]))
            records.append(record)
            bar.update(1)
    bar.close()
    return records
