"""Export a trained :class:`~tfface.model.FaceModel` for serving: SavedModel and TFLite.

Inference differs from training in two ways, both set by :func:`configure_for_inference`:

* pixel sampling is deterministic, as in :meth:`FaceModel.infer`: a fixed lattice of pixels
  (:class:`~tfface.layers.pixel_sampling.LatticePixelSampler`, every pixel unless
  ``num_samples`` says otherwise) replaces the random, confidence-ranked draw of supplement C.
  Every lattice pixel enters the solves with its predicted confidence times the weight that
  makes the fit an estimate of the training fit, so background pixels do not count. A fixed
  lattice, unlike a top-k by confidence, cannot change its choice under rounding differences
  between runtimes;
* the normal equations are solved by the Gauss-Jordan solver built from TFLite built-in ops
  (:mod:`tfface.layers.linear_solve`) instead of Cholesky.

The exported graph (:func:`inference_outputs`) uses only ops with TFLite built-in kernels (cross
products and 3 x 3 determinants come from :mod:`tfface.geometry.vectors`). The SavedModel uses
the same graph, free of XLA-compiled functions, so any TF Serving build can load it.

Exported layout (``savedmodel/<name>/<version>/``)::

    saved_model.pb, variables/      SavedModel, signature ``serving_default`` (below)
    assets.extra/tfface.json        metadata: image size, input, outputs, TFLite output order
    assets.extra/mesh.npz           triangles, 68 landmark vertex ids, vertex UVs of the mesh
    assets.extra/model.tflite       the same graph for TFLite (batch 1, built-in ops only); optional,
                                    made from the SavedModel by :func:`add_tflite`

``serving_default`` (the only signature, so the graph's constants are stored once): input
``images`` ``(B, H, W, 3)`` **uint8** RGB (``H = W`` = the model's image size, see
``tfface.json``; float images in [0, 1] are ``round(255 x)``); outputs (float32) are those of
:data:`OUTPUT_DOCS`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tfface.errors import InputError, ModelFileError
from tfface.geometry.camera import project
from tfface.layers.pixel_sampling import LatticePixelSampler
from tfface.model import (FIT_ILL_POSED, FIT_OK, FIT_STATUS_NAMES, FaceModel, face_confidence, failed_fits_zeroed,
                          fit_validity, landmarks5_from_68_tf)
from tfface.morphable.texel_map import build_locator
from tfface.morphable.uv3dmm import UVMorphableModel

if TYPE_CHECKING:
    from tfface.training.config import TrainConfig

#: Format tag of ``tfface.json``.
EXPORT_FORMAT = "tfface-export/1"

#: Every output of the exported signatures, with its shape and meaning (B images, V vertices).
OUTPUT_DOCS: dict[str, str] = {
    "correspondence": "(B, H, W, 2) predicted UV correspondence (u, v) in [0, 1]",
    "depth": "(B, H, W) predicted depth (the network's unit; its scale is psi)",
    "confidence": "(B, H, W, 2) geometric and photometric confidence in [0, 1]",
    "K": "(B, 3, 3) camera intrinsics (pixels)",
    "R": "(B, 3, 3) camera rotation, model to camera space",
    "t": "(B, 3) camera translation (mm): X_cam = R X + t",
    "shape_coefficients": "(B, Ks) identity coefficients (~N(0, 1))",
    "expression_coefficients": "(B, Ke) expression coefficients",
    "albedo_coefficients": "(B, Kr) albedo coefficients",
    "lighting": "(B, 3, 9) inverse-SH lighting per RGB channel (camera-space normals)",
    "vertices": "(B, V, 3) fitted mesh vertices, model space (mm)",
    "vertex_albedo": "(B, V, 3) fitted albedo per vertex in [0, 1] (clipped)",
    "landmarks68": "(B, 68, 2) iBUG landmarks, pixels (x right, y down, centres at +0.5)",
    "landmarks5": "(B, 5, 2) eye centres, nose tip, mouth corners, pixels",
    "face_score": "(B,) share of pixels whose joint confidence (geometric x photometric) > 0.5 (low: no face)",
    "fit_valid": "(B,) 1 where the fit is valid (fit_status 0), else 0: then camera, landmarks, coefficients and "
                 "vertices are no face",
    "fit_status": "(B,) 0 valid; 1 ill-posed fit (too little confident data, a non-finite or singular solve: K, R, t "
                  "are no camera, often the placeholder K = R = I); 2 implausible camera (focal length, depth or "
                  "viewpoint out of range, see tfface.geometry.camera.camera_is_plausible, or a landmark more than "
                  "half an image width outside the image)",
    "camera_fixed": "(B,) 1 where the free camera was implausible and the fit is the fallback under a fixed natural "
                    "camera (square pixels, principal point at the centre, the config's inference_fallback_focal), "
                    "else 0",
    "upright_fit": "(B,) 1 where the fit is the upright pass's (the face fitted again in the image turned upright by "
                   "the first fit's roll, the config's inference_upright_pass), else 0",
}

#: Joint (geometric x photometric) confidence above which a pixel counts towards ``face_score``.
FACE_PIXEL_CONFIDENCE = 0.5

#: Sub-directory of a version folder holding the tfface extras (TF Serving ignores it).
EXTRAS = "assets.extra"


def configure_for_inference(model: FaceModel, num_samples: int | None = None, geometry: type | None = None,
                            **geometry_options) -> FaceModel:
    """Switch a new, not yet built ``model`` (in place) to deterministic, TFLite-compatible inference.

    With ``num_samples``, the inference lattice (:class:`LatticePixelSampler`) gets that many
    pixels instead of the configuration's ``inference_samples``; selects the ``"gauss_jordan"``
    solver in both least-squares layers and runs the UV-3DMM sampling and the normals without
    XLA (``use_xla``). With ``geometry`` (a subclass of the geometric layer, e.g. from
    :mod:`tfface.inference_variants`), the geometric layer is replaced by one of that class
    with the same settings plus ``geometry_options``, and the fallback on a fixed camera
    (:meth:`FaceModel.inference_fit`) is off: the variant solves its own camera. Returns
    ``model``. For a trained (built) model use :func:`inference_model`.

    Raises:
        InputError: if ``model`` is already built (Keras forbids new sub-layers then).
    """
    if model.built:
        raise InputError("configure_for_inference needs a model that is not built yet; use inference_model")
    if num_samples is not None:
        cfg = model.config
        model.inference_sampler = LatticePixelSampler(num_samples, cfg.num_samples, cfg.sample_threshold,
                                                      name="inference_sampler")
    if geometry is not None:  # a variant's own camera: no fallback on another
        model.geometric = geometry.from_config({**model.geometric.get_config(), **geometry_options})
        model.fallback_focal = None
    model.geometric.solver = "gauss_jordan"
    model.photometric.solver = "gauss_jordan"
    model.use_xla = False  # no XLA cluster in exported graphs
    model(tf.zeros([1, model.config.image_size, model.config.image_size, 3]))
    return model


def relocated(uv_model: UVMorphableModel, resolution: int) -> UVMorphableModel:
    """``uv_model`` with its texel locator rebuilt at ``resolution`` (same embedding and tables).

    Sampling is exact at any locator resolution (the locator only lists candidate triangles), so
    an export can use a coarser one: its tables shrink with ``resolution^2`` (5.5 MB at 320 for
    the ICT face, 1.4 MB at 160).
    """
    return UVMorphableModel(uv_model.model, uv_model.vertex_uv, int(resolution), uv_model.num_original_vertices,
                            build_locator(uv_model.vertex_uv, uv_model.model.triangles, int(resolution)))


def inference_model(trained: FaceModel, num_samples: int | None = None, uv_model: str | Path | None = None,
                    geometry: type | None = None, **geometry_options) -> FaceModel:
    """A configured (:func:`configure_for_inference`) copy of ``trained`` with its weights.

    Args:
        trained: the trained model (a mixed-precision one is copied into a float32 model).
        num_samples, geometry, geometry_options: see :func:`configure_for_inference`.
        uv_model: a UV-3DMM file of the same model (e.g. :func:`relocated`) to use instead of
            the trained model's; the sampler tables then come from it, every other weight from
            ``trained``.
    """
    source = str(uv_model) if uv_model is not None else trained.uv_model_path or trained.uv_model
    # Served in float32 (TFLite has no bfloat16 kernels); a mixed-precision network keeps float32
    # master weights, so they carry over unchanged.
    config = trained.config.replace(mixed_precision=False)
    model = configure_for_inference(FaceModel(source, config), num_samples, geometry, **geometry_options)
    values = {weight.path: weight for weight in trained.weights}
    for weight in model.weights:
        if uv_model is not None and weight.path.startswith(f"{model.uv_sampling.name}/"):
            continue
        if weight.path not in values:
            raise InputError(f"the trained model has no weight {weight.path}")
        weight.assign(values[weight.path])
    return model


def load_trained_model(weights: str | Path, uv_model: str | Path, config: TrainConfig | dict,
                       num_samples: int | None = None, locator_resolution: int | None = None,
                       geometry: type | None = None, unet_only: bool = False, **geometry_options) -> FaceModel:
    """A configured :class:`FaceModel` with ``weights`` (a ``*.weights.h5`` of training) restored.

    With ``locator_resolution``, the UV-3DMM's locator is rebuilt at that resolution
    (:func:`relocated`) for a smaller export; ``geometry``: see :func:`configure_for_inference`.
    With ``unet_only``, ``weights`` are a U-Net's alone (a run's pretrained network,
    ``pretrain/unet.weights.h5``): the U-Net is the model's only trained part.

    Raises:
        ModelFileError: missing or incompatible weights file.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise ModelFileError(f"weights file {weights} does not exist")
    trained = FaceModel(str(uv_model), config)
    trained(tf.zeros([1, trained.config.image_size, trained.config.image_size, 3]))
    try:
        (trained.unet if unet_only else trained).load_weights(weights)
    except (ValueError, OSError, KeyError) as error:
        raise ModelFileError(f"{weights}: cannot load into a {trained.config.name!r} model ({error})") from error
    if locator_resolution is None:
        return inference_model(trained, num_samples, None, geometry, **geometry_options)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "uv3dmm.npz"
        relocated(UVMorphableModel.load(uv_model), locator_resolution).save(path)
        return inference_model(trained, num_samples, path, geometry, **geometry_options)


def inference_outputs(model: FaceModel, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """The exported outputs (:data:`OUTPUT_DOCS`) for float32 RGB ``images`` ``(B, H, W, 3)`` in [0, 1].

    Built from the fit :meth:`FaceModel.infer` makes (:meth:`FaceModel.inference_fit`); landmarks are projected with the decomposed
    camera ``K, R, t`` (no matrix inverse), ``vertex_albedo`` evaluates the albedo model at the fitted
    coefficients from the UV-3DMM sampler's per-vertex tables (no second copy in the graph);
    ``fit_valid`` and ``fit_status`` are those of :meth:`FaceModel.fit_validity`, and a failed fit's
    outputs are made finite (:func:`tfface.model.failed_fits_zeroed`).
    """
    fit = model.inference_fit(images)
    mesh = model.uv_model.model
    vertices = fit["vertices"]
    landmarks68, _ = project(tf.gather(vertices, mesh.landmarks68, axis=1), fit["K"], fit["R"], fit["t"])
    albedo = model.uv_sampling.vertex_values(fit["albedo_coefficients"], "albedo")
    maps = fit["maps"]
    ks = mesh.num_shape
    validity = model.fit_validity(fit, landmarks68)
    return failed_fits_zeroed({
        "correspondence": maps[..., 0:2], "depth": maps[..., 2], "confidence": maps[..., 3:5],
        "K": fit["K"], "R": fit["R"], "t": fit["t"],
        "shape_coefficients": fit["coefficients"][:, :ks], "expression_coefficients": fit["coefficients"][:, ks:],
        "albedo_coefficients": fit["albedo_coefficients"], "lighting": fit["lighting"],
        "vertices": vertices, "vertex_albedo": tf.clip_by_value(albedo, 0.0, 1.0),
        "landmarks68": landmarks68, "landmarks5": landmarks5_from_68_tf(landmarks68),
        "face_score": tf.reduce_mean(tf.cast(face_confidence(maps) > FACE_PIXEL_CONFIDENCE, tf.float32), axis=[1, 2]),
        "camera_fixed": fit["camera_fixed"], "upright_fit": fit["upright_fit"], **validity,
    }, validity["fit_valid"])


def with_fit_validity(outputs: dict[str, np.ndarray], image_size: int) -> dict[str, np.ndarray]:
    """``outputs`` of an exported model, with ``fit_valid`` and ``fit_status`` judged by today's rule
    (:func:`tfface.model.fit_validity`), whatever rule the export's graph applied.

    An export that returns ``fit_status`` keeps every failure it reports, and the rule is applied on
    top (an export older than a rule, e.g. one judging only the landmarks' centroid in view, gets
    the newer checks here; for a current export it changes nothing). For an export older than
    ``fit_status`` the fit counts as ill posed where the camera is not finite or is the placeholder
    ``K = R = I`` its decomposition gives a failed solve (no real fit lands on it exactly).

    Args:
        outputs: numpy outputs (:data:`OUTPUT_DOCS`) of a batch, at least ``K`` ``(B, 3, 3)``,
            ``R`` ``(B, 3, 3)``, ``t`` ``(B, 3)`` and ``landmarks68`` ``(B, 68, 2)`` (pixels).
        image_size: the model's input side (pixels), the width ``K`` refers to.

    Returns:
        ``outputs`` with ``fit_status`` and ``fit_valid`` ``(B,)`` float32.
    """
    K, R, t = (np.asarray(outputs[name], np.float32) for name in ("K", "R", "t"))
    if "fit_status" in outputs:
        reported = np.asarray(outputs["fit_status"], np.float32)
        well_posed = reported != FIT_ILL_POSED
    else:
        eye = np.eye(3, dtype=np.float32)
        placeholder = np.all(K == eye, axis=(-2, -1)) & np.all(R == eye, axis=(-2, -1))
        well_posed = np.isfinite(K).all((-2, -1)) & np.isfinite(R).all((-2, -1)) & np.isfinite(t).all(-1) & ~placeholder
        reported = np.full(len(K), float(FIT_OK), np.float32)
    judged = fit_validity(well_posed.astype(np.float32), K, R, t, np.asarray(outputs["landmarks68"], np.float32),
                          float(image_size))["fit_status"].numpy()
    status = np.where(reported != FIT_OK, reported, judged).astype(np.float32)
    return {**outputs, "fit_status": status, "fit_valid": (status == FIT_OK).astype(np.float32)}


# ---------------------------------------------------------------------------- export
def _uint8_inference(model: FaceModel) -> tf.types.experimental.GenericFunction:
    """``inference_outputs`` of uint8 images (divided by 255), as a ``tf.function``."""
    return tf.function(lambda images: inference_outputs(model, tf.cast(images, tf.float32) / 255.0))


class FaceServingModule(tf.Module):
    """``tf.Module`` holding the model and its serving function (see module docstring)."""

    def __init__(self, model: FaceModel):
        super().__init__(name="tfface")
        self.model = model
        self.serve = _uint8_inference(model)


def export_metadata(model: FaceModel) -> dict:
    """The ``tfface.json`` contents for ``model``."""
    mesh = model.uv_model.model
    return {
        "format": EXPORT_FORMAT,
        "image_size": model.config.image_size,
        "input": "images: (B, H, W, 3) uint8 RGB (serving_default; TFLite with B = 1)",
        "outputs": OUTPUT_DOCS,
        "tflite_outputs": None,
        "num_samples": model.inference_sampler.num_samples,
        "face_pixel_confidence": FACE_PIXEL_CONFIDENCE,
        "fit_status_names": list(FIT_STATUS_NAMES),
        "num_vertices": mesh.num_vertices,
        "model_name": mesh.name,
        "config": dataclasses.asdict(model.config),
    }


def _write_mesh(model: FaceModel, path: Path) -> None:
    mesh = model.uv_model.model
    np.savez_compressed(path, triangles=mesh.triangles.astype(np.int32), landmarks68=mesh.landmarks68.astype(np.int32),
                        vertex_uv=model.uv_model.vertex_uv.astype(np.float32),
                        num_original_vertices=np.int32(model.uv_model.num_original_vertices))


def add_tflite(folder: str | Path) -> Path:
    """Convert the ``serving_default`` signature of an exported version folder to TFLite.

    Writes ``assets.extra/model.tflite`` (``TFLITE_BUILTINS`` only; variables frozen to constants;
    run with batch 1) and records its output order in ``tfface.json``. The SavedModel graph has
    built-in ops only, so it converts without Flex ops.

    Returns:
        The ``.tflite`` path.
    """
    folder = Path(folder)
    meta_path = folder / EXTRAS / "tfface.json"
    if not (folder / "saved_model.pb").is_file() or not meta_path.is_file():
        raise ModelFileError(f"{folder} is not an exported tfface model (no saved_model.pb / {EXTRAS}/tfface.json)")
    loaded = tf.saved_model.load(str(folder))  # keep alive: the signature only references its variables
    signature = loaded.signatures["serving_default"]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(signature)])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path = folder / EXTRAS / "model.tflite"
    path.write_bytes(converter.convert())
    metadata = json.loads(meta_path.read_text())
    metadata["tflite_outputs"] = sorted(signature.structured_outputs)  # flattening order of a dict: sorted keys
    meta_path.write_text(json.dumps(metadata, indent=2))
    return path


def export_model(model: FaceModel, root: str | Path, name: str, version: int, tflite: bool = True) -> Path:
    """Write ``root/name/version/`` (SavedModel, extras and, with ``tflite``, :func:`add_tflite`).

    ``model`` must already be configured by :func:`configure_for_inference`.

    Returns:
        The version folder.

    Raises:
        InputError: bad name/version, an existing version folder, or an unconfigured model.
    """
    if model.geometric.solver != "gauss_jordan" or model.use_xla:
        raise InputError("configure the model with configure_for_inference before exporting")
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid model name {name!r}")
    if int(version) < 1:
        raise InputError(f"version must be a positive integer, got {version}")
    folder = Path(root) / name / str(int(version))
    if folder.exists():
        raise InputError(f"{folder} already exists; choose another --version")
    module = FaceServingModule(model)
    size = model.config.image_size
    signature = module.serve.get_concrete_function(tf.TensorSpec([None, size, size, 3], tf.uint8, name="images"))
    tf.saved_model.save(module, str(folder), signatures={"serving_default": signature})
    extras = folder / EXTRAS
    extras.mkdir(exist_ok=True)
    _write_mesh(model, extras / "mesh.npz")
    (extras / "tfface.json").write_text(json.dumps(export_metadata(model), indent=2))
    if tflite:
        add_tflite(folder)
    return folder


# ---------------------------------------------------------------------------- runtimes
@dataclasses.dataclass(frozen=True)
class ExportedMesh:
    """The mesh of an exported model: ``triangles`` (T, 3), ``landmarks68`` (68,), ``vertex_uv`` (V, 2)."""

    triangles: np.ndarray
    landmarks68: np.ndarray
    vertex_uv: np.ndarray
    num_original_vertices: int


def read_extras(folder: str | Path) -> tuple[dict, ExportedMesh]:
    """The metadata (``tfface.json``) and mesh of an exported version folder.

    Raises:
        ModelFileError: if ``folder`` is not an export written by :func:`export_model`, or its
            extras are unreadable or of an unknown format.
    """
    folder = Path(folder)
    meta_path = folder / EXTRAS / "tfface.json"
    if not (folder / "saved_model.pb").is_file() or not meta_path.is_file():
        raise ModelFileError(f"{folder} is not an exported tfface model (no saved_model.pb / {EXTRAS}/tfface.json)")
    try:
        metadata = json.loads(meta_path.read_text())
        with np.load(folder / EXTRAS / "mesh.npz") as mesh:
            extras = ExportedMesh(mesh["triangles"], mesh["landmarks68"], mesh["vertex_uv"],
                                  int(mesh["num_original_vertices"]))
    except (OSError, ValueError, KeyError) as error:
        raise ModelFileError(f"{folder}: unreadable export extras ({error})") from error
    if metadata.get("format") != EXPORT_FORMAT:
        raise ModelFileError(f"{meta_path}: unknown format {metadata.get('format')!r}")
    return metadata, extras


def _serving_signature(folder: Path):
    """The ``serving_default`` signature of the SavedModel in ``folder``, loaded once per process
    and per version of its ``saved_model.pb`` (:func:`_loaded_signature`)."""
    graph = folder / "saved_model.pb"
    stat = graph.stat() if graph.is_file() else None
    return _loaded_signature(str(folder.resolve()), stat and (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _loaded_signature(folder: str, version: tuple[int, int] | None):
    """Loaded once: TensorFlow keeps every loaded SavedModel's functions for the life of the
    process (about 0.65 GB more for each load of version 18), so a process that opens the same
    export again (tests, a server's clients) shares the first load."""
    del version  # only part of the cache key
    return tf.saved_model.load(folder).signatures["serving_default"]


class ExportedModel:
    """An exported model folder run by TensorFlow (SavedModel) or TFLite.

    Call with ``(B, H, W, 3)`` uint8 RGB images; returns a dict of numpy arrays
    (:data:`OUTPUT_DOCS`; ``fit_valid`` and ``fit_status`` judged by today's rule,
    :func:`with_fit_validity`, also for an export older than it). The TFLite backend runs the
    batch one image at a time with ``tf.lite.Interpreter`` (it warns that it is deprecated in
    favour of ``ai_edge_litert``, which is not installed here; in TF 2.21 it works, with the
    XNNPACK delegate).

    Args:
        folder: A version folder written by :func:`export_model`.
        backend: ``"savedmodel"`` or ``"tflite"``.
    """

    BACKENDS = ("savedmodel", "tflite")

    def __init__(self, folder: str | Path, backend: str = "savedmodel"):
        self.folder = Path(folder)
        if backend not in self.BACKENDS:
            raise InputError(f"unknown backend {backend!r}; expected one of {self.BACKENDS}")
        self.metadata, self.mesh = read_extras(self.folder)
        self.backend = backend
        self.image_size = int(self.metadata["image_size"])
        if backend == "savedmodel":
            self._signature = _serving_signature(self.folder)
        else:
            path = self.folder / EXTRAS / "model.tflite"
            if not path.is_file() or not self.metadata.get("tflite_outputs"):
                raise ModelFileError(f"{self.folder} has no TFLite model; create it with `tfface export --tflite {self.folder}`")
            self._interpreter = tf.lite.Interpreter(model_path=str(path))
            self._interpreter.resize_tensor_input(self._interpreter.get_input_details()[0]["index"],
                                                  [1, self.image_size, self.image_size, 3])
            self._interpreter.allocate_tensors()

    def _run_tflite(self, image: np.ndarray) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        return {name: interpreter.get_tensor(detail["index"]).copy()
                for name, detail in zip(self.metadata["tflite_outputs"], interpreter.get_output_details())}

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise InputError(f"expected uint8 images of shape (B, {self.image_size}, {self.image_size}, 3), "
                             f"got {images.dtype} {images.shape}")
        if self.backend == "savedmodel":
            outputs = {k: v.numpy() for k, v in self._signature(images=tf.constant(images)).items()}
        else:
            per_image = [self._run_tflite(image) for image in images]
            outputs = {name: np.concatenate([p[name] for p in per_image]) for name in per_image[0]}
        return with_fit_validity(outputs, self.image_size)


class KerasInference:
    """The configured Keras model as a callable like :class:`ExportedModel` (uint8 in, numpy out)."""

    def __init__(self, model: FaceModel):
        self.model = model
        self.image_size = model.config.image_size
        mesh = model.uv_model.model
        self.mesh = ExportedMesh(mesh.triangles, mesh.landmarks68, model.uv_model.vertex_uv,
                                 model.uv_model.num_original_vertices)
        self._function = _uint8_inference(model)

    def __call__(self, images: np.ndarray, intrinsics: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Run on ``(B, H, W, 3)`` uint8 images; ``intrinsics`` ``(B, 3, 3)`` (model-input pixels)
        for a model with :class:`~tfface.inference_variants.KnownIntrinsicsGeometry`."""
        if intrinsics is not None:
            if not hasattr(self.model.geometric, "set_intrinsics"):
                raise InputError("this model does not take known intrinsics (configure it with KnownIntrinsicsGeometry)")
            self.model.geometric.set_intrinsics(intrinsics)
        return {k: v.numpy() for k, v in self._function(tf.constant(np.asarray(images, np.uint8))).items()}
