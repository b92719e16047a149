"""BlazeFace face detection (MediaPipe's short- and full-range TFLite detectors) in TensorFlow.

The two detectors ship in ``tfface/assets/blazeface/`` (Apache-2.0, ``LICENSE-mediapipe.txt``
beside them) and run in TensorFlow's own ``tf.lite.Interpreter``. Each takes a square RGB input
in [-1, 1] and returns, per SSD anchor, 16 regressors and a score logit:

* regressors: box centre offset (x, y) from the anchor, box width and height, then 6 keypoints
  (x, y) relative to the anchor (:data:`KEYPOINT_NAMES`), all in input pixels;
* the anchors (:func:`ssd_anchors`) are MediaPipe's ``SsdAnchorsCalculator`` with fixed anchor
  size: unit-square centres of every cell of each layer's grid, one anchor per aspect ratio plus
  one interpolated scale, layers of equal stride merged.

Candidates above the score threshold (sigmoid of the logit clipped to +-100) are merged by
MediaPipe's *weighted* non-maximum suppression (:func:`weighted_nms`). The picture reaches a
detector whole (:func:`tfface.detection.warp.letterbox`), so every detection maps back to
original pixels exactly.

The short-range model is made for faces that fill a good part of the picture; it misses small
faces and many profiles. :class:`FaceDetector` therefore runs *passes* (:data:`DEFAULT_PASSES`):
the short-range and the full-range model on the whole picture, their candidates above each
model's threshold merged by one weighted NMS; where they find nothing, the *fallback* passes
(:data:`DEFAULT_FALLBACK`): the short-range model on the picture zoomed out 2x (faces too big for
its anchors). The zoomed pass is a fallback, not a pass of its own, because on pictures of small
faces it adds boxes twice too big around faces the others found (they overlap them too little to
be merged). ``tools/bench_detection.py`` measures what each pass adds, per yaw bin, on the
AFLW2000-3D dev photos.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfface.detection import warp
from tfface.errors import InputError
from tfface.paths import ASSETS_DIR

#: Folder of the vendored detector models and their licence.
MODELS_DIR = ASSETS_DIR / "blazeface"

#: The 6 keypoints, in the detectors' order (the subject's right eye is on the image's left).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")
RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH_CENTRE, RIGHT_EAR, LEFT_EAR = range(6)

#: Logits are clipped to this magnitude before the sigmoid (MediaPipe's ``score_clipping_thresh``).
SCORE_CLIPPING = 100.0


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """One BlazeFace TFLite model and the options of its MediaPipe graph.

    Attributes:
        name: short name, recorded with each detection.
        filename: model file in :data:`MODELS_DIR`.
        input_size: square input side in pixels.
        strides: SSD layer strides (equal consecutive strides share one grid).
        anchors_per_layer: anchors per grid cell and layer (aspect ratio 1, plus 1 for the
            interpolated scale where the graph uses it).
        score_threshold: lowest detection score (after the sigmoid) the graph keeps.
        iou_threshold: weighted NMS merges candidates overlapping more than this (IoU).
    """

    name: str
    filename: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int
    score_threshold: float
    iou_threshold: float = 0.3


#: Faces within about 2 m, filling a good part of the picture.
SHORT_RANGE = DetectorSpec("short_range", "face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, 0.5)
#: Small and distant faces (sparse model).
FULL_RANGE = DetectorSpec("full_range", "face_detection_full_range_sparse.tflite", 192, (4,), 1, 0.6)


def ssd_anchors(input_size: int, strides: Sequence[int], anchors_per_layer: int) -> np.ndarray:
    """Anchor centres of a fixed-anchor-size SSD (MediaPipe's ``SsdAnchorsCalculator``).

    Args:
        input_size: square input side in pixels.
        strides: layer strides; consecutive layers of equal stride share one grid, whose cells
            then hold the anchors of all of them.
        anchors_per_layer: anchors per cell contributed by each layer.

    Returns:
        ``(N, 2)`` float64 anchor centres (x, y) in unit input coordinates, grid by grid, row by
        row, cell by cell, anchor by anchor (the order of the model's outputs).
    """
    centres, layer = [], 0
    while layer < len(strides):
        stride, per_cell = strides[layer], 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += anchors_per_layer
            layer += 1
        cells = math.ceil(input_size / stride)
        y, x = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = (np.stack([x, y], -1).reshape(-1, 2) + 0.5) / cells
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
           input_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, keypoints and scores of raw BlazeFace outputs.

    Args:
        regressors: ``(N, 16)`` raw regressors (see the module docstring).
        logits: ``(N,)`` or ``(N, 1)`` score logits.
        anchors: ``(N, 2)`` anchor centres from :func:`ssd_anchors`.
        input_size: the model's input side in pixels (the regressors' scale).

    Returns:
        ``boxes`` ``(N, 4)`` (x0, y0, x1, y1), ``keypoints`` ``(N, 6, 2)``, both in unit input
        coordinates, and ``scores`` ``(N,)`` in (0, 1).
    """
    regressors = np.asarray(regressors, np.float64)
    if regressors.ndim != 2 or regressors.shape[1] != 4 + 2 * len(KEYPOINT_NAMES) or len(regressors) != len(anchors):
        raise InputError(f"expected ({len(anchors)}, 16) regressors, got {regressors.shape}")
    values = regressors / input_size
    centre, half = values[:, :2] + anchors, values[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = values[:, 4:].reshape(len(values), -1, 2) + anchors[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64).reshape(-1), -SCORE_CLIPPING, SCORE_CLIPPING)))
    return boxes, keypoints, scores


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N,)`` intersection over union of one ``(4,)`` box with ``(N, 4)`` boxes (x0, y0, x1, y1)."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0.0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0.0, None), axis=-1)  # noqa: E731
    union = area(box) + area(boxes) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    Repeatedly takes the best remaining candidate and every remaining candidate overlapping it by
    more than ``iou_threshold`` (itself included), and replaces them by one detection: their
    score-weighted mean box and keypoints, with the best candidate's score.

    Args:
        boxes: ``(N, 4)`` candidate boxes (x0, y0, x1, y1).
        keypoints: ``(N, K, 2)`` their keypoints.
        scores: ``(N,)`` their scores.
        iou_threshold: overlap (IoU) above which candidates merge.

    Returns:
        ``boxes`` ``(M, 4)``, ``keypoints`` ``(M, K, 2)``, ``scores`` ``(M,)`` of the merged
        detections, best first, and ``leaders`` ``(M,)``: the index of each one's best candidate.
    """
    boxes, keypoints, scores = (np.asarray(a, np.float64) for a in (boxes, keypoints, scores))
    remaining = np.argsort(-scores, kind="stable")
    merged: list[tuple[np.ndarray, np.ndarray, float, int]] = []
    while remaining.size:
        overlap = box_iou(boxes[remaining[0]], boxes[remaining]) > iou_threshold
        overlap[0] = True
        group, remaining = remaining[overlap], remaining[~overlap]
        weights = scores[group] / scores[group].sum()
        merged.append((weights @ boxes[group], np.einsum("n,nkc->kc", weights, keypoints[group]),
                       float(scores[group[0]]), int(group[0])))
    if not merged:
        return np.zeros((0, 4)), np.zeros((0,) + keypoints.shape[1:]), np.zeros(0), np.zeros(0, int)
    box, points, score, leaders = zip(*merged)
    return np.stack(box), np.stack(points), np.array(score), np.array(leaders)


@dataclasses.dataclass(frozen=True)
class Detection:
    """One face found in a picture, in that picture's pixels (x right, y down, centres at +0.5).

    Attributes:
        box: ``(4,)`` x0, y0, x1, y1.
        keypoints: ``(6, 2)`` the keypoints of :data:`KEYPOINT_NAMES`.
        score: detector confidence in (0, 1).
        source: the pass that found its best candidate (e.g. ``"short_range"``).
    """

    box: np.ndarray
    keypoints: np.ndarray
    score: float
    source: str

    @property
    def size(self) -> float:
        """The box's longer side in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def as_json(self) -> dict:
        """The detection as JSON-ready values (pixels rounded to 0.01)."""
        return {"box_xyxy": np.round(self.box, 2).tolist(), "score": round(self.score, 5), "detector": self.source,
                "keypoints": {name: np.round(point, 2).tolist() for name, point in zip(KEYPOINT_NAMES, self.keypoints)}}


class BlazeFace:
    """One BlazeFace TFLite model: raw candidates in picture pixels.

    Args:
        spec: which model (:data:`SHORT_RANGE` or :data:`FULL_RANGE`).
        models_dir: folder holding ``spec.filename`` (default the vendored copies).
        threads: interpreter threads.
    """

    def __init__(self, spec: DetectorSpec, models_dir: str | Path = MODELS_DIR, threads: int | None = None):
        import tensorflow as tf

        path = Path(models_dir) / spec.filename
        if not path.is_file():
            raise InputError(f"face detector model {path} is missing")
        self.spec = spec
        self.anchors = ssd_anchors(spec.input_size, spec.strides, spec.anchors_per_layer)
        with warnings.catch_warnings():  # TF 2.21 still ships it; ai_edge_litert is not a dependency
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            self._interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        # regressors (N, 16) and scores (N, 1): told apart by their last dimension
        by_width = {int(detail["shape"][-1]): detail["index"] for detail in outputs}
        self._regressors, self._logits = by_width[16], by_width[1]
        if len(self.anchors) != int(outputs[0]["shape"][1]):
            raise InputError(f"{path}: {outputs[0]['shape'][1]} outputs, but {len(self.anchors)} anchors")

    def candidates(self, image: np.ndarray, zoom: float = 1.0,
                   min_score: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate of one run on the whole picture, before non-maximum suppression.

        Args:
            image: ``(H, W, 3)`` uint8 RGB picture.
            zoom: the detector input covers ``zoom`` times the picture's longer side
                (:func:`tfface.detection.warp.letterbox`).
            min_score: lowest score kept (default the model's threshold).

        Returns:
            ``boxes`` ``(N, 4)`` and ``keypoints`` ``(N, 6, 2)`` in picture pixels, ``scores``
            ``(N,)``.
        """
        size = self.spec.input_size
        to_input = warp.letterbox(image.shape[0], image.shape[1], size, zoom)
        pixels = warp.warp(image, to_input, size).astype(np.float32) / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, pixels[None])
        self._interpreter.invoke()
        boxes, keypoints, scores = decode(self._interpreter.get_tensor(self._regressors)[0],
                                          self._interpreter.get_tensor(self._logits)[0], self.anchors, size)
        keep = scores >= (self.spec.score_threshold if min_score is None else min_score)
        to_picture = np.linalg.inv(to_input) @ warp.scale_translation(float(size), (0.0, 0.0))
        corners = warp.apply(to_picture, boxes[keep].reshape(-1, 2, 2)).reshape(-1, 4)
        return corners, warp.apply(to_picture, keypoints[keep]), scores[keep]


@dataclasses.dataclass(frozen=True)
class DetectionPass:
    """One run of a detector over the whole picture.

    Attributes:
        spec: the model.
        zoom: the input covers ``zoom`` times the picture's longer side (> 1: faces look smaller).
    """

    spec: DetectorSpec
    zoom: float = 1.0

    @property
    def name(self) -> str:
        return self.spec.name if self.zoom == 1.0 else f"{self.spec.name}@zoom{self.zoom:g}"


#: The passes :class:`FaceDetector` runs on every picture: short range, and full range (small
#: faces, more profiles).
DEFAULT_PASSES = (DetectionPass(SHORT_RANGE), DetectionPass(FULL_RANGE))
#: The passes it runs where those find nothing: short range zoomed out (faces larger than its anchors).
DEFAULT_FALLBACK = (DetectionPass(SHORT_RANGE, 2.0),)


class FaceDetector:
    """Every face in a picture: the candidates of several BlazeFace passes, merged.

    Args:
        passes: the runs made on every picture (:data:`DEFAULT_PASSES`).
        fallback: the runs made where ``passes`` find no face (:data:`DEFAULT_FALLBACK`).
        min_score: lowest detection score reported; ``None`` keeps each pass's model threshold.
        iou_threshold: weighted NMS overlap threshold across all candidates.
        models_dir: folder of the TFLite models.
    """

    def __init__(self, passes: Sequence[DetectionPass] = DEFAULT_PASSES,
                 fallback: Sequence[DetectionPass] = DEFAULT_FALLBACK, min_score: float | None = None,
                 iou_threshold: float = SHORT_RANGE.iou_threshold, models_dir: str | Path = MODELS_DIR):
        if not passes:
            raise InputError("a face detector needs at least one pass")
        if min_score is not None and not 0.0 < min_score < 1.0:
            raise InputError(f"the detection score threshold must lie in (0, 1), got {min_score}")
        self.passes, self.fallback = tuple(passes), tuple(fallback)
        self.min_score, self.iou_threshold = min_score, iou_threshold
        self._models = {spec.name: BlazeFace(spec, models_dir)
                        for spec in {p.spec for p in self.passes + self.fallback}}

    def _run(self, image: np.ndarray, passes: Sequence[DetectionPass]) -> list[Detection]:
        """The candidates of ``passes``, merged by weighted NMS, best first."""
        found = [(*self._models[p.spec.name].candidates(image, p.zoom, self.min_score), p.name) for p in passes]
        boxes, keypoints, scores = (np.concatenate([f[i] for f in found]) for i in range(3))
        sources = [f[3] for f in found for _ in range(len(f[2]))]
        merged = weighted_nms(boxes, keypoints, scores, self.iou_threshold)
        return [Detection(box, points, float(score), sources[leader]) for box, points, score, leader in zip(*merged)]

    def __call__(self, image: np.ndarray, max_faces: int | None = None) -> list[Detection]:
        """Detect the faces of one picture.

        Args:
            image: ``(H, W, 3)`` uint8 RGB picture.
            max_faces: keep at most this many detections (the best).

        Returns:
            The detections, best score first, in picture pixels.
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise InputError(f"the face detector needs an (H, W, 3) uint8 picture, got {image.dtype} {image.shape}")
        detections = self._run(image, self.passes)
        if not detections and self.fallback:
            detections = self._run(image, self.fallback)
        return detections[:max_faces]
