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
detector as squares of it (:meth:`DetectionPass.regions`) mapped by known similarities, so every
detection maps back to original pixels exactly.

The short-range model is made for faces that fill a good part of the picture; it misses small
faces and many profiles. :class:`FaceDetector` therefore runs *passes* (:data:`DEFAULT_PASSES`):
the short-range and the full-range model on the whole picture, their candidates above each
model's threshold merged by one weighted NMS; where they find nothing, the *fallback* passes
(:data:`DEFAULT_FALLBACK`): the short-range model on the picture zoomed out 2x (faces too big for
its anchors); and the *supplement* (:data:`DEFAULT_SUPPLEMENT`): the short-range model on 2 x 2
overlapping tiles, whose faces are added only where no other detection is (faces small in a big
picture, e.g. profiles in a group). Neither runs with the others because, merged with them, the
zoomed pass adds boxes twice too big around small faces, and the tiles add parts of big faces and
blend them into their boxes. Last, a short-range detection of a face small in the picture (box
under :data:`REFINE_BELOW` of its longer side), whose box that model sizes badly, is *refined*:
detected again on a square :data:`REFINE_CONTEXT` times its box about it, where the face fills
the model's input as it expects. ``tools/bench_detection.py`` measures what each pass adds, per
yaw bin, on the AFLW2000-3D dev photos; ``tools/bench_multiface.py`` on tiled scenes of them.
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
        box_scale, box_shift: the model's boxes are scaled by ``box_scale`` about their centre
            and moved ``box_shift`` box sides down, so that boxes of both models frame a face
            alike (:func:`calibrated`).
        min_box: candidates whose box side is below this share of the square the model sees are
            dropped (too small for the model to size them).
    """

    name: str
    filename: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int
    score_threshold: float
    iou_threshold: float = 0.3
    box_scale: float = 1.0
    box_shift: float = 0.0
    min_box: float = 0.0


#: Faces within about 2 m, filling a good part of the picture. Its boxes of faces smaller than a
#: sixth of the square it sees are too big (dev photos shrunk into an 800-pixel picture: canonical
#: crop 1.41 box sides at a box of 0.25 of the picture, 1.29 at 0.17, 0.95 at 0.14; the full-range
#: model's stay at 1.45-1.53): those are dropped, the full-range model and the tiles find such faces.
SHORT_RANGE = DetectorSpec("short_range", "face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, 0.5,
                           min_box=0.16)
#: Small and distant faces (sparse model). Its boxes are 7% larger than the short-range model's
#: and 0.03 box sides higher on the same faces: on the dev photos each model alone, the canonical
#: crop's side is 1.457 (short) and 1.356 (full) box sides, its centre 0.054 and 0.086 box sides
#: below the box centre (medians over the 991 and 852 faces each finds).
FULL_RANGE = DetectorSpec("full_range", "face_detection_full_range_sparse.tflite", 192, (4,), 1, 0.6,
                          box_scale=1.356 / 1.457, box_shift=0.086 - 0.054 * 1.356 / 1.457)


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


def calibrated(boxes: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``(N, 4)`` boxes (x0, y0, x1, y1) scaled by ``scale`` about their centres, then moved
    ``shift`` times their (original) mean side down."""
    boxes = np.asarray(boxes, np.float64)
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
    centre = centre + np.outer(shift * half.mean(1) * 2, [0.0, 1.0])
    return np.concatenate([centre - scale * half, centre + scale * half], axis=1)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N,)`` intersection over union of one ``(4,)`` box with ``(N, 4)`` boxes (x0, y0, x1, y1)."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0.0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0.0, None), axis=-1)  # noqa: E731
    union = area(box) + area(boxes) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def covered_share(box: np.ndarray, other: np.ndarray) -> float:
    """Share of the ``(4,)`` box's area (x0, y0, x1, y1) inside the ``other`` box."""
    low, high = np.maximum(box[:2], other[:2]), np.minimum(box[2:], other[2:])
    area = float(np.prod(np.clip(box[2:] - box[:2], 0.0, None)))
    return float(np.prod(np.clip(high - low, 0.0, None))) / area if area > 0 else 1.0


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float,
                 models: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    Repeatedly takes the best remaining candidate and every remaining candidate overlapping it by
    more than ``iou_threshold`` (itself included), and replaces them by one detection: their
    score-weighted mean box and keypoints, with the best candidate's score.

    Args:
        boxes: ``(N, 4)`` candidate boxes (x0, y0, x1, y1).
        keypoints: ``(N, K, 2)`` their keypoints.
        scores: ``(N,)`` their scores.
        iou_threshold: overlap (IoU) above which candidates merge.
        models: ``(N,)`` the model of each candidate: where given, a detection blends only the
            candidates of its best candidate's model (the others it suppresses), as the two
            models size the same face differently.

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
        if models is not None:
            group = group[[models[i] == models[group[0]] for i in group]]
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

    def candidates(self, image: np.ndarray, region: tuple[float, float, float] | None = None,
                   min_score: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate of one run on a square region of the picture, before non-maximum suppression.

        Args:
            image: ``(H, W, 3)`` uint8 RGB picture.
            region: ``(x0, y0, side)`` of the square the detector sees, in picture pixels (black
                outside the picture); default the whole picture, centred (:meth:`DetectionPass.regions`).
            min_score: lowest score kept (default the model's threshold).

        Returns:
            ``boxes`` ``(N, 4)`` and ``keypoints`` ``(N, 6, 2)`` in picture pixels, ``scores``
            ``(N,)``.
        """
        size = self.spec.input_size
        x0, y0, side = region if region is not None else DetectionPass(self.spec).regions(*image.shape[:2])[0]
        to_input = warp.scale_translation(size / side, (-size / side * x0, -size / side * y0))
        pixels = warp.warp(image, to_input, size).astype(np.float32) / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, pixels[None])
        self._interpreter.invoke()
        boxes, keypoints, scores = decode(self._interpreter.get_tensor(self._regressors)[0],
                                          self._interpreter.get_tensor(self._logits)[0], self.anchors, size)
        keep = (scores >= (self.spec.score_threshold if min_score is None else min_score)) & \
            ((boxes[:, 2:] - boxes[:, :2]).mean(1) >= self.spec.min_box)
        boxes = calibrated(boxes[keep], self.spec.box_scale, self.spec.box_shift)
        to_picture = np.linalg.inv(to_input) @ warp.scale_translation(float(size), (0.0, 0.0))
        corners = warp.apply(to_picture, boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        return corners, warp.apply(to_picture, keypoints[keep]), scores[keep]


#: Tiles of a ``g x g`` grid pass each cover this much over ``1 / g`` of the picture's side (overlap).
TILE_OVERLAP = 1.2


@dataclasses.dataclass(frozen=True)
class DetectionPass:
    """One run of a detector over the picture: whole, zoomed out, or tile by tile.

    Attributes:
        spec: the model.
        zoom: the square seen covers ``zoom`` times the picture's longer side, centred (> 1: faces
            look smaller).
        grid: ``grid x grid`` overlapping tiles of that square, each run on its own (> 1: faces
            look bigger); a tile's candidates that cross its edge (a face cut by it) are dropped.
        min_score: lowest score this pass keeps, also when the detector is given a lower one
            (default: the model's threshold, or the detector's).
    """

    spec: DetectorSpec
    zoom: float = 1.0
    grid: int = 1
    min_score: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name + (f"@zoom{self.zoom:g}" if self.zoom != 1.0 else "") + \
            (f"@{self.grid}x{self.grid}" if self.grid > 1 else "")

    def regions(self, height: int, width: int) -> list[tuple[float, float, float]]:
        """``(x0, y0, side)`` of every square the detector sees in a ``height x width`` picture."""
        if self.zoom <= 0 or self.grid < 1:
            raise InputError(f"a detection pass needs zoom > 0 and grid >= 1, got {self.zoom} and {self.grid}")
        side = self.zoom * max(height, width)
        x0, y0 = (width - side) / 2, (height - side) / 2
        if self.grid == 1:
            return [(x0, y0, side)]
        tile = side * min(1.0, TILE_OVERLAP / self.grid)
        steps = np.linspace(0.0, side - tile, self.grid)
        return [(x0 + dx, y0 + dy, tile) for dy in steps for dx in steps]

    def candidates(self, model: BlazeFace, image: np.ndarray,
                   min_score: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`BlazeFace.candidates` of every region, in picture pixels, concatenated.

        Args:
            model: the pass's model.
            image: ``(H, W, 3)`` uint8 RGB picture.
            min_score: the detector's score threshold (None: the model's); the pass's own
                ``min_score`` is kept if higher.
        """
        if self.min_score is not None:
            min_score = max(self.min_score, min_score or 0.0)
        found = []
        for region in self.regions(*image.shape[:2]):
            boxes, keypoints, scores = model.candidates(image, region, min_score)
            if self.grid > 1:
                x0, y0, side = region
                inside = (boxes[:, :2] >= [x0, y0]).all(1) & (boxes[:, 2:] <= [x0 + side, y0 + side]).all(1)
                boxes, keypoints, scores = boxes[inside], keypoints[inside], scores[inside]
            found.append((boxes, keypoints, scores))
        return tuple(np.concatenate([f[i] for f in found]) for i in range(3))


#: The passes :class:`FaceDetector` runs on every picture: short range, and full range (small
#: faces, more profiles).
DEFAULT_PASSES = (DetectionPass(SHORT_RANGE), DetectionPass(FULL_RANGE))
#: The passes it runs where those find nothing: short range zoomed out (faces larger than its anchors).
DEFAULT_FALLBACK = (DetectionPass(SHORT_RANGE, 2.0),)
#: The passes whose faces it adds where no other detection is: short range on 2 x 2 tiles (faces
#: small in a big picture, profiles among them), scores from 0.7: on the first 300 dev photos the
#: tiles' extra candidates (13, from 0.50 to 0.64) are ears, hands and clouds, on a frame of the
#: astronaut sample a spacesuit at 0.66, while the faces the other passes miss in 30 tiled scenes
#: of dev photos score 0.65, 0.78, 0.83, 0.85, 0.86 (``tools/bench_detection.py``, ``bench_multiface.py``).
DEFAULT_SUPPLEMENT = (DetectionPass(SHORT_RANGE, grid=2, min_score=0.7),)
#: A supplementary candidate is dropped when this share of its box lies in another detection's.
MAX_COVERED = 0.3
#: A short-range detection whose box side is under this share of the picture's longer side is
#: refined. The model sizes and places such faces badly (:data:`SHORT_RANGE`): in 30 tiled scenes
#: of dev photos (``tools/bench_multiface.py``) its detections of faces at 0.16-0.26 of the
#: picture were 0.06 box sides off in median keypoint error (up to 0.96), refined 0.03, and the
#: worst crops' fits scored 28-56% box NME, refined 7-19%; refining the faces of the whole dev
#: photos (0.31 of the picture and more) loses (box NME +0.4 points over 88 photos).
REFINE_BELOW = 0.3
#: A detection is refined on a square this many times its box side about the box's centre: the
#: face then fills 0.29 of the model's input, as the whole dev photos' faces fill theirs. Tighter
#: squares refine the scenes as well but make a tracked face jitter (2.5: raw jitter 3.05% against
#: 2.16 unrefined on ``tools/bench_video_jitter.py``'s clip, whose face is 0.19 of the frame; 3.5:
#: 2.06).
REFINE_CONTEXT = 3.5
#: The refined detection is the one overlapping the first by at least this IoU (else it stays).
REFINE_MIN_IOU = 0.3


class FaceDetector:
    """Every face in a picture: the candidates of several BlazeFace passes, merged.

    Args:
        passes: the runs made on every picture (:data:`DEFAULT_PASSES`).
        fallback: the runs made where ``passes`` find no face (:data:`DEFAULT_FALLBACK`).
        supplement: runs whose faces are added where no other detection is (:data:`DEFAULT_SUPPLEMENT`:
            a candidate with more than :data:`MAX_COVERED` of its box inside another detection's box
            is dropped, never blended into it).
        min_score: lowest detection score reported; ``None`` keeps each pass's model threshold.
        iou_threshold: weighted NMS overlap threshold across all candidates.
        refine_below: refine short-range detections whose box side is under this share of the
            picture's longer side (:data:`REFINE_BELOW`; 0: never).
        models_dir: folder of the TFLite models.
    """

    def __init__(self, passes: Sequence[DetectionPass] = DEFAULT_PASSES,
                 fallback: Sequence[DetectionPass] = DEFAULT_FALLBACK,
                 supplement: Sequence[DetectionPass] = DEFAULT_SUPPLEMENT, min_score: float | None = None,
                 iou_threshold: float = SHORT_RANGE.iou_threshold, refine_below: float = REFINE_BELOW,
                 models_dir: str | Path = MODELS_DIR):
        if not passes:
            raise InputError("a face detector needs at least one pass")
        if min_score is not None and not 0.0 < min_score < 1.0:
            raise InputError(f"the detection score threshold must lie in (0, 1), got {min_score}")
        if not 0.0 <= refine_below <= 1.0:
            raise InputError(f"refine_below must lie in [0, 1], got {refine_below}")
        self.passes, self.fallback, self.supplement = tuple(passes), tuple(fallback), tuple(supplement)
        self.min_score, self.iou_threshold, self.refine_below = min_score, iou_threshold, refine_below
        specs = {p.spec for p in self.passes + self.fallback + self.supplement} | ({SHORT_RANGE} if refine_below else set())
        self._models = {spec.name: BlazeFace(spec, models_dir) for spec in specs}

    def _run(self, image: np.ndarray, passes: Sequence[DetectionPass],
             taken: Sequence[Detection] = ()) -> list[Detection]:
        """The candidates of ``passes`` not covered by ``taken`` boxes, merged by weighted NMS, best first."""
        found = [(*p.candidates(self._models[p.spec.name], image, self.min_score), p.name) for p in passes]
        boxes, keypoints, scores = (np.concatenate([f[i] for f in found]) for i in range(3))
        sources = [f[3] for f in found for _ in range(len(f[2]))]
        models = [p.spec.name for p, f in zip(passes, found) for _ in range(len(f[2]))]
        if taken:
            free = np.array([max(covered_share(box, d.box) for d in taken) <= MAX_COVERED for box in boxes], bool)
            boxes, keypoints, scores = boxes[free], keypoints[free], scores[free]
            sources = [source for source, keep in zip(sources, free) if keep]
            models = [model for model, keep in zip(models, free) if keep]
        merged = weighted_nms(boxes, keypoints, scores, self.iou_threshold, models)
        return [Detection(box, points, float(score), sources[leader]) for box, points, score, leader in zip(*merged)]

    def _refined(self, image: np.ndarray, detection: Detection) -> Detection:
        """``detection`` detected again by the short-range model on a square :data:`REFINE_CONTEXT`
        times its box about it, where it is a short-range detection under ``refine_below`` of the
        picture's longer side and the new run finds it (IoU >= :data:`REFINE_MIN_IOU`); else itself.
        The refined detection keeps the first one's score; its source gains ``"@refined"``."""
        if not detection.source.startswith(SHORT_RANGE.name) or detection.size >= self.refine_below * max(image.shape[:2]):
            return detection
        box = np.asarray(detection.box, np.float64)
        side = REFINE_CONTEXT * float(np.mean(box[2:] - box[:2]))
        (x, y) = (box[:2] + box[2:]) / 2 - side / 2
        found = self._models[SHORT_RANGE.name].candidates(image, (x, y, side), self.min_score)
        boxes, keypoints, _, _ = weighted_nms(*found, self.iou_threshold)
        overlap = box_iou(box, boxes)
        if not overlap.size or overlap.max() < REFINE_MIN_IOU:
            return detection
        best = int(np.argmax(overlap))
        return Detection(boxes[best], keypoints[best], detection.score, detection.source + "@refined")

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
        if self.supplement:
            detections = sorted(detections + self._run(image, self.supplement, detections), key=lambda d: -d.score)
        return [self._refined(image, detection) for detection in detections[:max_faces]]
