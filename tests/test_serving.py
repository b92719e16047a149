"""TF Serving config and client. No model server binary is available here, so the client talks to
in-process stand-ins implementing the same gRPC service (``PredictionService.Predict`` with the
real ``tensorflow-serving-api`` types) and REST predict API, both executing the exported
``serving_default`` signature on the decoded request inputs."""

from __future__ import annotations

import contextlib
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from test_export import assert_close_scaled, loaded_export, toy_export, toy_faces, toy_images  # noqa: F401 (fixtures)
from tfface import export
from tfface.errors import InputError
from tfface.serving import client
from tfface.serving.config import models_config_text, served_models, write_models_config


def test_models_config_parses_as_model_server_config(toy_export, tmp_path):
    _, folder = toy_export
    root = folder.parent.parent
    (root / "not_a_model").mkdir(exist_ok=True)
    assert served_models(root) == ["toy"]
    path = write_models_config(root)
    parsed = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    (entry,) = parsed.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("toy", "/models/toy", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 1
    with pytest.raises(InputError, match="no exported model"):
        models_config_text([])
    with pytest.raises(InputError, match="does not exist"):
        served_models(tmp_path / "missing")


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Stand-in for the model server: runs the named signature on the request's decoded inputs."""

    def __init__(self, loaded, name):
        self.loaded, self.name = loaded, name

    def Predict(self, request, context):
        if request.model_spec.name != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_spec.name}")
        signature = self.loaded.signatures[request.model_spec.signature_name or "serving_default"]
        inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in signature(**inputs).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


@contextlib.contextmanager
def grpc_stand_in(loaded, name: str):
    """``host:port`` of a stand-in gRPC model server serving ``loaded``'s signatures as ``name``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(loaded, name), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.fixture(scope="module")
def reference(loaded_export, toy_images):
    return {k: v.numpy() for k, v in loaded_export.signatures["serving_default"](images=tf.constant(toy_images)).items()}


def test_grpc_client_round_trip(loaded_export, toy_images, reference):
    with grpc_stand_in(loaded_export, "toy") as target:
        outputs = client.predict_grpc(target, toy_images, "toy")
        with pytest.raises(grpc.RpcError):
            client.predict_grpc(target, toy_images, "other")
    assert sorted(outputs) == sorted(export.OUTPUT_DOCS)
    for name, value in reference.items():
        np.testing.assert_array_equal(outputs[name], value)


def test_predict_request_carries_uint8_images_and_model_spec(toy_images):
    request = client.predict_request(toy_images, "toy", version=3)
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert (parsed.model_spec.name, parsed.model_spec.signature_name, parsed.model_spec.version.value) == (
        "toy", "serving_default", 3)
    decoded = tf.make_ndarray(parsed.inputs["images"])
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, toy_images)
    with pytest.raises(InputError, match="uint8"):
        client.predict_request(toy_images.astype(np.float32), "toy")


@contextlib.contextmanager
def rest_stand_in(loaded, name: str):
    """``host:port`` of a stand-in for the REST predict API serving ``loaded``'s signatures as ``name``."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path in (f"/v1/models/{name}/versions/1:predict", f"/v1/models/{name}:predict")
            images = tf.constant(np.asarray(body["inputs"]["images"], np.uint8))
            outputs = loaded.signatures[body["signature_name"]](images=images)
            payload = json.dumps({"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def rest_server(loaded_export):
    """``host:port`` of a stand-in for the REST predict API serving the toy export as "toy"."""
    with rest_stand_in(loaded_export, "toy") as target:
        yield target


def test_rest_client_round_trip(rest_server, toy_images, reference):
    outputs = client.predict_rest(rest_server, toy_images, "toy", version=1)
    for name, value in reference.items():
        assert_close_scaled(outputs[name], value, name, tolerance=1e-6)  # JSON keeps float32 to ~1e-7
    with pytest.raises(InputError, match="model server error"):
        client.decode_rest_response({"error": "Servable not found"})


def test_client_command_prints_face_score_fit_validity_and_landmarks(rest_server, toy_export, toy_images, tmp_path,
                                                                     capsys):
    from PIL import Image

    _, folder = toy_export
    Image.fromarray(toy_images[0]).save(tmp_path / "face.png")
    black = np.zeros_like(toy_images[0])
    Image.fromarray(black).save(tmp_path / "black.png")
    for name, valid, status in (("face", True, "ok"), ("black", False, "ill_posed_fit")):
        assert client.main([str(tmp_path / f"{name}.png"), "--protocol", "rest", "--target", rest_server,
                            "--model", "toy", "--export", str(folder)]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert (printed["fit_valid"], printed["fit_status"]) == (valid, status), name
        assert len(printed["landmarks5"]) == 5 and 0.0 <= printed["face_score"] <= 1.0


def test_repository_models_config_serves_the_default_model():
    from tfface.paths import REPO_ROOT

    root = REPO_ROOT / "savedmodel"
    parsed = text_format.Parse((root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    names = [entry.name for entry in parsed.model_config_list.config]
    assert names == served_models(root) and "tfface_ict" in names
