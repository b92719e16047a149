"""JSON records of a reconstruction: landmarks, head pose, camera and coefficients.

Pixel quantities are given in the *original* image (the :class:`~tfface.io.images.SquareFit`
of the input maps model pixels back), x right, y down, pixel centres at +0.5. The camera follows
DESIGN.md: ``X_cam = R X + t``, ``x = K X_cam / Z``; ``K`` is expressed in original-image pixels.
Head pose angles are those of ``R_rel = diag(1, -1, -1) R = Rz(roll) Ry(yaw) Rx(pitch)``, the
rotation relative to a frontal view (``R = diag(1, -1, -1)``), in degrees.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfface.errors import InputError
from tfface.io.images import SquareFit

if TYPE_CHECKING:
    import numpy.typing as npt

#: Format tag of the records.
RECORD_FORMAT = "tfface-reconstruction/1"

_FRONTAL = np.diag([1.0, -1.0, -1.0])


def head_pose_degrees(rotation: np.ndarray) -> dict[str, float]:
    """Yaw, pitch and roll (degrees) of a camera rotation ``R`` (see the module docstring)."""
    relative = _FRONTAL @ np.asarray(rotation, np.float64)
    return {
        "yaw": math.degrees(math.asin(float(np.clip(-relative[2, 0], -1.0, 1.0)))),
        "pitch": math.degrees(math.atan2(relative[2, 1], relative[2, 2])),
        "roll": math.degrees(math.atan2(relative[1, 0], relative[0, 0])),
    }


def rounded(array: npt.ArrayLike, digits: int = 5) -> list:
    """``array`` rounded to ``digits`` decimals as nested lists (JSON-ready); non-finite values raise."""
    array = np.asarray(array, np.float64)
    if not np.all(np.isfinite(array)):
        raise InputError("cannot record non-finite values")
    return np.round(array, digits).tolist()


def face_record(outputs: dict[str, np.ndarray], index: int, fit: SquareFit, source: str, detected: bool,
                evidence: dict[str, float]) -> dict:
    """The JSON-ready record of image ``index`` of a batch of exported-model ``outputs``.

    Args:
        outputs: the outputs of :class:`tfface.export.ExportedModel` (or ``KerasInference``).
        index: image index in the batch.
        fit: how the image was fitted to the model input.
        source: input name (file, or frame name).
        detected: whether a face was found; if not, pose, camera, landmarks and coefficients
            are omitted.
        evidence: the figures the decision was made on (recorded as given, rounded).
    """
    record = {"format": RECORD_FORMAT, "source": source, **{k: round(float(v), 5) for k, v in evidence.items()},
              "face_detected": bool(detected)}
    if not detected:
        return record
    face = {name: value[index] for name, value in outputs.items()}
    record.update(fitted_fields(fit.to_original(face["landmarks68"]), fit.to_original(face["landmarks5"]),
                                fit.matrix() @ face["K"], face["R"], face["t"], face))
    return record


def camera_fields(K: np.ndarray, R: np.ndarray, t: np.ndarray, fixed: float | np.ndarray = 0.0) -> dict:
    """A record's ``camera``, rounded: intrinsics ``K`` ``(3, 3)`` (pixels), rotation ``R`` ``(3, 3)``,
    translation ``t`` ``(3,)`` (mm) and ``intrinsics_fixed``, whether ``K`` is the fixed camera of
    the fallback fit (the export's ``camera_fixed``) rather than a fitted one."""
    return {"K": rounded(K, 4), "R": rounded(R, 6), "t_mm": rounded(t, 3), "intrinsics_fixed": bool(fixed)}


def fitted_fields(landmarks68: np.ndarray, landmarks5: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                  face: dict[str, np.ndarray]) -> dict:
    """The record fields of a fitted face, rounded: landmarks, head pose, camera, whether the model
    fitted it again in its crop turned upright (``upright_fit``), coefficients, lighting.

    Args:
        landmarks68, landmarks5: ``(68, 2)`` and ``(5, 2)`` landmarks in original-image pixels.
        K, R, t: the camera of the original image (intrinsics in its pixels).
        face: the exported-model outputs of this face (no batch axis); its coefficients and
            lighting are recorded as they are (they do not depend on the image's pixels).
    """
    return dict(
        landmarks68=rounded(landmarks68, 2),
        landmarks5=rounded(landmarks5, 2),
        head_pose_degrees={k: round(v, 3) for k, v in head_pose_degrees(R).items()},
        camera=camera_fields(K, R, t, face.get("camera_fixed", 0.0)),
        upright_fit=bool(face.get("upright_fit", 0.0)),
        coefficients={name: rounded(face[f"{name}_coefficients"]) for name in ("shape", "expression", "albedo")},
        lighting_inverse_sh=rounded(face["lighting"]),
    )


def write_json(path: str | Path, record: dict) -> None:
    """Write ``record`` as indented JSON (NaN is refused: ``allow_nan=False``)."""
    Path(path).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
