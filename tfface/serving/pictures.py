"""Whole pictures through a model on TF Serving: every face, in the picture's own pixels.

The exported model keeps its crop signature (``serving_default``: ``(B, S, S, 3)`` uint8 face
crops). This client-side helper does the rest where the picture is: it finds the faces with
BlazeFace (:class:`tfface.detection.blazeface.FaceDetector`, shipped in the package), crops each
the way the network was trained, sends the crops in one request (:class:`ServedModel`, gRPC or
REST through :mod:`tfface.serving.client`) and maps every result back to the original picture
(:func:`picture_faces`): landmarks, the camera (``K`` of the original picture, ``R``, ``t``) and
the head pose. Example, with a model server started as in :mod:`tfface.serving.config`::

    python -m tfface.serving.pictures group.jpg --protocol rest --target localhost:8501 --model tfface_ict

prints one JSON object with every face (best detection first). From Python::

    from tfface.serving.pictures import ServedModel, picture_faces
    served = ServedModel.from_export("savedmodel/tfface_ict/20", "localhost:8500", "tfface_ict")
    faces = picture_faces(picture, served)  # picture: (H, W, 3) uint8 RGB
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfface.detection.blazeface import FaceDetector
from tfface.detection.pipeline import Face, Runner, reconstruct_picture
from tfface.errors import InputError
from tfface.export import EXTRAS, with_fit_validity
from tfface.io.records import camera_fields, head_pose_degrees, rounded
from tfface.paths import DEFAULT_MODEL
from tfface.serving.client import predict_grpc, predict_rest

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Request functions by protocol.
PROTOCOLS = {"grpc": predict_grpc, "rest": predict_rest}


class ServedModel:
    """A model on TF Serving as a runner (:data:`tfface.detection.pipeline.Runner`).

    Args:
        target: ``host:port`` of the model server (gRPC or REST port).
        model_name: the served model's name.
        image_size: the model's input side (``image_size`` of its ``tfface.json``).
        protocol: ``"grpc"`` or ``"rest"``.
        version: a served version (default: the server's latest).
        timeout: seconds per request.
    """

    def __init__(self, target: str, model_name: str, image_size: int, protocol: str = "grpc",
                 version: int | None = None, timeout: float = 60.0):
        if protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
        self.target, self.model_name, self.image_size = target, model_name, int(image_size)
        self.protocol, self.version, self.timeout = protocol, version, timeout

    @classmethod
    def from_export(cls, folder: str | Path, target: str, model_name: str, protocol: str = "grpc",
                    version: int | None = None) -> "ServedModel":
        """A served model whose input size is read from its export ``folder`` (``assets.extra/tfface.json``)."""
        meta = Path(folder) / EXTRAS / "tfface.json"
        if not meta.is_file():
            raise InputError(f"{folder} is not an exported tfface model (no {EXTRAS}/tfface.json)")
        return cls(target, model_name, json.loads(meta.read_text())["image_size"], protocol, version)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Send ``(B, S, S, 3)`` uint8 crops; return the outputs with ``fit_valid`` and ``fit_status``."""
        outputs = PROTOCOLS[self.protocol](self.target, images, self.model_name, self.version, self.timeout)
        return with_fit_validity(outputs, self.image_size)


def face_summary(face: Face) -> dict:
    """JSON-ready result of one face, in the original picture: detection, fit validity, landmarks, camera, pose."""
    picture = face.picture
    summary = {"box_xyxy": rounded(face.detection.box, 2), "detector_score": round(face.detection.score, 5),
               "face_score": round(float(face.outputs["face_score"]), 5), "fit_valid": face.fit_valid}
    if face.fit_valid:
        summary.update(landmarks68=rounded(picture["landmarks68"], 2), landmarks5=rounded(picture["landmarks5"], 2),
                       head_pose_degrees={k: round(v, 3) for k, v in head_pose_degrees(picture["R"]).items()},
                       camera=camera_fields(picture["K"], picture["R"], picture["t"],
                                            face.outputs.get("camera_fixed", 0.0)),
                       upright_fit=face.fitted_upright)
    return summary


def picture_faces(picture: np.ndarray, runner: Runner, detector: FaceDetector | None = None,
                  max_faces: int | None = None) -> list[dict]:
    """Every face of a whole picture through ``runner`` (e.g. a :class:`ServedModel`), in the picture's pixels.

    Args:
        picture: ``(H, W, 3)`` uint8 RGB.
        runner: the model: a :class:`ServedModel` or any runner (an :class:`~tfface.export.ExportedModel`).
        detector: the face detector (default: BlazeFace with its default passes).
        max_faces: at most this many faces (the best detections).

    Returns:
        One :func:`face_summary` per detected face, best detection first; landmarks, camera and
        pose only where the fit is valid.
    """
    faces = reconstruct_picture(picture, detector or FaceDetector(), runner, max_faces)
    return [face_summary(face) for face in faces]


def main(argv: Sequence[str] | None = None) -> int:
    from tfface.io.images import read_image

    parser = argparse.ArgumentParser(description="Every face of a picture through a tfface model on TF Serving.")
    parser.add_argument("image", type=Path)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="grpc")
    parser.add_argument("--target", default=None, help="host:port (default localhost:8500 gRPC, :8501 REST)")
    parser.add_argument("--model", default="tfface_ict", help="served model name")
    parser.add_argument("--export", type=Path, default=DEFAULT_MODEL, help="exported version folder (for the input size)")
    parser.add_argument("--max-faces", type=int, default=None)
    parser.add_argument("--min-score", type=float, default=None, help="face detection score threshold in (0, 1)")
    args = parser.parse_args(argv)
    target = args.target or ("localhost:8500" if args.protocol == "grpc" else "localhost:8501")
    served = ServedModel.from_export(args.export, target, args.model, args.protocol)
    faces = picture_faces(read_image(args.image), served, FaceDetector(min_score=args.min_score), args.max_faces)
    print(json.dumps({"image": str(args.image), "faces": faces}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
