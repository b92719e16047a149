"""A client for an exported tfface model served by TF Serving, over REST or gRPC.

Requests use the types of ``tensorflow-serving-api`` (``PredictRequest`` for gRPC; the REST
"columnar" ``{"signature_name", "inputs"}`` JSON). Install it without its ``tensorflow``
dependency, which would clash with ``tensorflow-cpu``::

    pip install --no-deps tensorflow-serving-api==2.21.0

Example (a model server started as in :mod:`tfface.serving.config`)::

    python -m tfface.serving.client face.jpg --protocol grpc --target localhost:8500 --model tfface_ict
    python -m tfface.serving.client face.jpg --protocol rest --target localhost:8501 --model tfface_ict

The image is padded to a square and resized to the model's input size (read from the exported
``tfface.json`` with ``--export``, default the repository's model) and sent as uint8. The command
prints the face score, whether the fit is valid (``fit_valid``, ``fit_status``; judged by today's rule
on top of the served model's, :func:`tfface.export.with_fit_validity`) and the
5 landmarks in the image's pixels.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from tfface.errors import InputError
from tfface.paths import DEFAULT_MODEL

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tensorflow_serving.apis import predict_pb2

#: Input name of the exported signatures.
INPUT_NAME = "images"


def _checked(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"expected uint8 images (B, H, W, 3), got {images.dtype} {images.shape}")
    return images


def predict_request(images: np.ndarray, model_name: str, signature: str = "serving_default",
                    version: int | None = None) -> predict_pb2.PredictRequest:
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for uint8 ``images`` ``(B, H, W, 3)``."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(_checked(images)))
    return request


def decode_predict_response(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    """Outputs of a ``PredictResponse`` as numpy arrays."""
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def rest_url(target: str, model_name: str, version: int | None = None) -> str:
    """``http://TARGET/v1/models/NAME[/versions/V]:predict``."""
    versioned = f"/versions/{int(version)}" if version is not None else ""
    return f"http://{target}/v1/models/{model_name}{versioned}:predict"


def rest_payload(images: np.ndarray, signature: str = "serving_default") -> dict:
    """The REST predict body (columnar format) for uint8 ``images``."""
    return {"signature_name": signature, "inputs": {INPUT_NAME: _checked(images).tolist()}}


def decode_rest_response(body: dict) -> dict[str, np.ndarray]:
    """Outputs of a REST predict response (columnar ``{"outputs": {...}}``) as float32 arrays."""
    if "outputs" not in body:
        raise InputError(f"model server error: {body.get('error', body)}")
    return {name: np.asarray(value, np.float32) for name, value in body["outputs"].items()}


def predict_rest(target: str, images: np.ndarray, model_name: str, version: int | None = None,
                 timeout: float = 60.0) -> dict[str, np.ndarray]:
    """POST ``images`` to a TF Serving REST endpoint; return the outputs."""
    request = urllib.request.Request(rest_url(target, model_name, version),
                                     data=json.dumps(rest_payload(images)).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return decode_rest_response(json.loads(response.read()))


def predict_grpc(target: str, images: np.ndarray, model_name: str, version: int | None = None,
                 timeout: float = 60.0) -> dict[str, np.ndarray]:
    """Call ``PredictionService.Predict`` at ``target`` (``host:port``); return the outputs."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_request(images, model_name, version=version)
    options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return decode_predict_response(stub.Predict(request, timeout=timeout))


def main(argv: Sequence[str] | None = None) -> int:
    from tfface.export import with_fit_validity
    from tfface.io.images import fit_to_square, read_image
    from tfface.model import FIT_STATUS_NAMES

    parser = argparse.ArgumentParser(description="Send an image to a tfface model on TF Serving.")
    parser.add_argument("image", type=Path)
    parser.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    parser.add_argument("--target", default=None, help="host:port (default localhost:8500 gRPC, :8501 REST)")
    parser.add_argument("--model", default="tfface_ict", help="served model name")
    parser.add_argument("--export", type=Path, default=DEFAULT_MODEL, help="exported version folder (for the input size)")
    args = parser.parse_args(argv)
    size = json.loads((args.export / "assets.extra" / "tfface.json").read_text())["image_size"]
    square, fit = fit_to_square(read_image(args.image), size)
    call = predict_grpc if args.protocol == "grpc" else predict_rest
    target = args.target or ("localhost:8500" if args.protocol == "grpc" else "localhost:8501")
    outputs = with_fit_validity(call(target, square[None], args.model), size)
    print(json.dumps({"face_score": float(outputs["face_score"][0]), "fit_valid": bool(outputs["fit_valid"][0]),
                      "fit_status": FIT_STATUS_NAMES[int(outputs["fit_status"][0])],
                      "landmarks5": fit.to_original(outputs["landmarks5"][0]).round(1).tolist()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
