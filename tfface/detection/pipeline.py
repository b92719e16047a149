"""Whole pictures in, every face out: detect, crop the way the network was trained, run, map back.

:func:`reconstruct_picture` finds the faces of a picture (:class:`~tfface.detection.blazeface.FaceDetector`),
frames each (:func:`~tfface.detection.crops.detection_framing`), runs the crops through a model
in batches and returns one :class:`Face` per detection, with the model's outputs in crop pixels
and, in ``picture``, what they mean in the original picture: landmarks, camera and the projected
mesh (:func:`~tfface.detection.crops.outputs_to_original`). :func:`reconstruct_framings` does the
same for crops framed otherwise (tracking, a refinement pass).

**The upright pass.** The networks fit a face that is turned in the picture's plane too nearly
upright in its crop, and they fit an upright face best. The detector's keypoints turn only a
face seen nearly from the front upright (:func:`~tfface.detection.crops.detection_framing`), so
every face is fitted a second time in its crop turned by the first fit's roll, keeping the
second fit where it is valid. A model exported with ``inference_upright_pass`` (version 18 on)
does this itself (:mod:`tfface.upright_pass`; its output ``upright_fit`` says so). For any other,
:func:`reconstruct_picture` does it by default with a second crop of the picture
(:func:`upright_pass`, :func:`~tfface.detection.crops.upright_framing`), which skips the faces the
model already fitted upright. With version 17 on the 1,000 AFLW2000-3D dev photos the picture's
pass took the box NME from 8.79 to 8.56%; version 18's own pass does as well, and both together
do worse (BUILD.md section 4, "Faces turned in the picture's plane: the upright pass").

The model is any *runner*: a callable taking ``(B, S, S, 3)`` uint8 crops and returning numpy
outputs (:data:`tfface.export.OUTPUT_DOCS`), with ``image_size`` = S, e.g.
:class:`tfface.export.ExportedModel` or a model served by TF Serving
(:class:`tfface.serving.pictures.ServedModel`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from tfface.detection import crops
from tfface.detection.blazeface import Detection, FaceDetector
from tfface.errors import InputError

#: ``(B, S, S, 3)`` uint8 crops -> numpy outputs of :data:`tfface.export.OUTPUT_DOCS` (has ``image_size``).
Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Face:
    """One face of a picture, reconstructed from its crop.

    Attributes:
        framing: where the crop lies in the picture.
        matrix: ``(3, 3)`` picture-to-crop pixel map ``A``.
        crop: ``(S, S, 3)`` uint8 crop the model saw.
        outputs: the model's outputs for the crop (crop pixels and camera; no batch axis).
        picture: :func:`~tfface.detection.crops.outputs_to_original`: ``landmarks68``,
            ``landmarks5``, ``mesh2d`` in picture pixels and the picture camera ``K``, ``R``, ``t``.
        detection: the detection it was framed from, if any.
    """

    framing: crops.Framing
    matrix: np.ndarray
    crop: np.ndarray
    outputs: dict[str, np.ndarray]
    picture: dict[str, np.ndarray]
    detection: Detection | None = None

    @property
    def fitted_upright(self) -> bool:
        """Whether the model fitted the face again in its crop turned upright (``upright_fit``)."""
        return bool(self.outputs.get("upright_fit", False))

    @property
    def fit_valid(self) -> bool:
        """Whether the model's fit is valid (``fit_valid``; an export without it: finite landmarks)."""
        if "fit_valid" in self.outputs:
            return bool(self.outputs["fit_valid"])
        return bool(np.isfinite(self.outputs["landmarks68"]).all())


def reconstruct_framings(picture: np.ndarray, framings: Sequence[crops.Framing], runner: Runner,
                         detections: Sequence[Detection | None] | None = None, batch_size: int = 8) -> list[Face]:
    """Crop ``framings`` out of ``picture``, run them through ``runner`` and map the results back.

    Args:
        picture: ``(H, W, 3)`` uint8 RGB.
        framings: the crops.
        runner: the model (see the module docstring).
        detections: the detection behind each framing (recorded in the faces), or None.
        batch_size: crops per model call.

    Returns:
        One :class:`Face` per framing, in order.
    """
    if detections is not None and len(detections) != len(framings):
        raise InputError(f"{len(framings)} framings but {len(detections)} detections")
    size = int(runner.image_size)
    faces: list[Face] = []
    for start in range(0, len(framings), batch_size):
        chunk = framings[start:start + batch_size]
        cropped = [crops.crop(picture, framing, size) for framing in chunk]
        outputs = runner(np.stack([image for image, _ in cropped]))
        for i, (framing, (image, matrix)) in enumerate(zip(chunk, cropped)):
            own = {name: np.asarray(value[i]) for name, value in outputs.items()}
            faces.append(Face(framing, matrix, image, own, crops.outputs_to_original(own, matrix),
                              None if detections is None else detections[start + i]))
    return faces


def upright_pass(picture: np.ndarray, faces: Sequence[Face], runner: Runner, batch_size: int = 8) -> list[Face]:
    """Fit every validly fitted face again in its crop turned upright by its fit (module docstring),
    but those the model fitted upright itself (:attr:`Face.fitted_upright`).

    Args:
        picture: ``(H, W, 3)`` uint8 RGB the faces were cropped from.
        faces: the faces of a first pass.
        runner: the model.
        batch_size: crops per model call.

    Returns:
        The faces, in order: each validly fitted one the model did not fit upright replaced by
        its second fit where that is valid too (its framing ``"upright"``), the others as they were.
    """
    again = [i for i, face in enumerate(faces) if face.fit_valid and not face.fitted_upright]
    framings = [crops.upright_framing(faces[i].framing, faces[i].picture["R"]) for i in again]
    second = reconstruct_framings(picture, framings, runner, [faces[i].detection for i in again], batch_size)
    out = list(faces)
    for i, face in zip(again, second):
        if face.fit_valid:
            out[i] = face
    return out


def reconstruct_picture(picture: np.ndarray, detector: FaceDetector, runner: Runner, max_faces: int | None = None,
                        template: np.ndarray | None = None, batch_size: int = 8, upright: bool = True) -> list[Face]:
    """Every face of a picture: detected, framed, reconstructed and mapped back.

    Args:
        picture: ``(H, W, 3)`` uint8 RGB.
        detector: the face detector (its ``min_score`` is the detection threshold).
        runner: the model.
        max_faces: reconstruct at most this many faces (the best detections).
        template: :func:`~tfface.detection.crops.detection_template` of the model's 3DMM
            (default: the default model's).
        batch_size: crops per model call.
        upright: whether to fit each face the model did not fit upright itself again, in its
            crop turned upright (:func:`upright_pass`).

    Returns:
        The faces, best detection score first; empty when no face is detected.
    """
    template = crops.default_detection_template() if template is None else template
    detections = detector(picture, max_faces)
    framings = [crops.detection_framing(detection, template) for detection in detections]
    faces = reconstruct_framings(picture, framings, runner, detections, batch_size)
    return upright_pass(picture, faces, runner, batch_size) if upright else faces
