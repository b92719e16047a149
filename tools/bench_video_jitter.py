"""Landmark jitter and lag on a test video of a real photo moved by a known smooth similarity.

The photo (default the shipped ``samples/astronaut.jpg``) is moved over ``--frames`` frames at
``--fps`` by a known smooth similarity ``M(t)`` (translation on an ellipse of ``--shift`` frame
sides, rotation of ``--turn`` degrees and scale of ``--zoom`` around 1, each a sine over the
clip), Gaussian pixel noise of ``--noise`` grey levels is added to every frame, and the frames are
encoded to H.264 (:class:`tfface.io.video.VideoWriter`). The video is decoded and followed by
:class:`tfface.tracking.FaceTracker` (detection on the first frame, then crops from the previous
fit), which gives each frame's raw and One-Euro-smoothed 68 landmarks.

Figures, in % of the face size (the side of BlazeFace's box of the face in the photo, about the
``sqrt(w h)`` of its landmark box, the unit of the box NME; independent of the model):

* *jitter*: the landmarks mapped back into the photo by the known ``M(t)^-1`` do not move there;
  jitter is their mean frame-to-frame displacement, raw and smoothed;
* *tracking error*: mean distance of the frame's landmarks from the reference landmarks (the
  per-point median of the mapped-back raw landmarks) moved by ``M(t)``;
* *lag*: the delay ``tau`` (frames, 0.1 steps) for which ``M(t - tau)`` of the reference best
  explains the landmarks; the smoothed landmarks trail the motion by it.

    python tools/bench_video_jitter.py [--model EXPORT] [--photo PHOTO] [--smooth-beta 1.0]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from tfface.detection import crops, warp
from tfface.detection.blazeface import FaceDetector
from tfface.export import ExportedModel
from tfface.io import video
from tfface.io.images import read_image
from tfface.paths import DEFAULT_MODEL, REPO_ROOT
from tfface.runtime import use_pooled_cpu_allocator
from tfface.tracking import REDETECT_EVERY, FaceTracker, Smoothing


def motion(t: float, duration: float, photo_side: float, size: int, shift: float, turn: float,
           zoom: float) -> np.ndarray:
    """``(3, 3)`` map of photo pixels into frame pixels at time ``t`` (seconds) of a ``duration`` clip."""
    phase = 2 * math.pi * t / duration
    centre = photo_side / 2 + shift * photo_side * np.array([math.sin(phase), 0.5 * math.sin(2 * phase)])
    side = photo_side / (1 + zoom * math.sin(phase))  # a smaller crop of the photo: the face looks bigger
    return crops.Framing(centre, side, math.radians(turn) * math.sin(phase)).matrix(size)


def make_video(photo: np.ndarray, path: Path, args) -> list[np.ndarray]:
    """Write the test video; return the per-frame motions ``M(t)``."""
    rng = np.random.default_rng(args.seed)
    duration, matrices = args.frames / args.fps, []
    with video.VideoWriter(path, args.fps, quality=18) as writer:
        for i in range(args.frames):
            matrices.append(motion(i / args.fps, duration, max(photo.shape[:2]), args.size, args.shift, args.turn,
                                   args.zoom))
            frame = warp.warp(photo, matrices[-1], args.size).astype(np.float64)
            writer.write(np.clip(frame + rng.normal(0, args.noise, frame.shape) + 0.5, 0, 255).astype(np.uint8))
    return matrices


def figures(points: np.ndarray, matrices: list[np.ndarray], reference: np.ndarray, face: float, args) -> dict:
    """Jitter, tracking error (both % of the face size) and lag (frames) of ``(T, 68, 2)`` frame landmarks."""
    back = np.stack([warp.apply(np.linalg.inv(m), p) for m, p in zip(matrices, points)])
    jitter = np.linalg.norm(np.diff(back, axis=0), axis=-1).mean()
    expected = np.stack([warp.apply(m, reference) for m in matrices])
    error = np.linalg.norm(points - expected, axis=-1).mean()
    duration, side, steps = args.frames / args.fps, max(args.photo_shape), np.arange(0.0, 10.05, 0.1)
    delayed = lambda tau: np.stack([warp.apply(motion((i - tau) / args.fps, duration, side, args.size, args.shift,  # noqa: E731
                                                      args.turn, args.zoom), reference) for i in range(len(points))])
    misfit = [np.linalg.norm(points - delayed(tau), axis=-1).mean() for tau in steps]
    return {"jitter": 100 * jitter / face, "error": 100 * error / face, "lag": float(steps[int(np.argmin(misfit))])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="exported version folder (default: the shipped model, %(default)s)")
    parser.add_argument("--photo", type=Path, default=REPO_ROOT / "samples" / "astronaut.jpg")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=384, help="frame side in pixels")
    parser.add_argument("--shift", type=float, default=0.1, help="translation amplitude, photo sides")
    parser.add_argument("--turn", type=float, default=8.0, help="rotation amplitude, degrees")
    parser.add_argument("--zoom", type=float, default=0.08, help="scale amplitude (relative)")
    parser.add_argument("--noise", type=float, default=4.0, help="pixel noise, grey levels (of 255)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smooth-min-cutoff", type=float, default=Smoothing.min_cutoff)
    parser.add_argument("--smooth-beta", type=float, default=Smoothing.beta)
    parser.add_argument("--smooth-d-cutoff", type=float, default=Smoothing.d_cutoff)
    parser.add_argument("--redetect-every", type=int, default=REDETECT_EVERY,
                        help="run the detector every this many frames (0: only when the face is lost)")
    parser.add_argument("--video", type=Path, default=None, help="also keep the test video here")
    args = parser.parse_args(argv)
    use_pooled_cpu_allocator()
    photo = read_image(args.photo)
    args.photo_shape = photo.shape[:2]
    smoothing = Smoothing(args.smooth_min_cutoff, args.smooth_beta, args.smooth_d_cutoff)
    tracker = FaceTracker(FaceDetector(), ExportedModel(args.model), args.fps, smoothing, max_faces=1,
                          redetect_every=args.redetect_every)
    with tempfile.TemporaryDirectory() as folder:
        path = args.video or Path(folder) / "test.mp4"
        matrices = make_video(photo, path, args)
        raw, smooth, lost, start = [], [], 0, time.perf_counter()
        for frame in video.read_frames(path):
            tracks = tracker(frame)
            if not tracks:  # keep the frame count: carry the last landmarks, count the loss
                lost += 1
                raw.append(raw[-1] if raw else np.full((68, 2), np.nan))
                smooth.append(smooth[-1] if smooth else np.full((68, 2), np.nan))
                continue
            raw.append(tracks[0].face.picture["landmarks68"])
            smooth.append(tracks[0].smoothed["landmarks68"])
        seconds = time.perf_counter() - start
    raw, smooth = np.stack(raw), np.stack(smooth)
    reference = np.median(np.stack([warp.apply(np.linalg.inv(m), p) for m, p in zip(matrices, raw)]), axis=0)
    detections = FaceDetector()(photo, max_faces=1)
    if not detections:
        raise SystemExit(f"no face found in {args.photo}")
    face = detections[0].size
    print(f"model {args.model}; {args.photo.name} moved over {args.frames} frames at {args.fps:g} fps ({args.size}x{args.size}"
          f", shift {args.shift:g}, turn {args.turn:g} deg, zoom {args.zoom:g}, noise {args.noise:g}); face "
          f"{face:.0f} px in the photo; {lost} frames without a tracked face; {args.frames / seconds:.1f} frames/s")
    print(f"smoothing: One-Euro min_cutoff {smoothing.min_cutoff:g} Hz, beta {smoothing.beta:g}, "
          f"d_cutoff {smoothing.d_cutoff:g} Hz")
    print(f"{'landmarks':12s}{'jitter %':>10s}{'error %':>10s}{'lag (frames)':>14s}")
    for label, points in (("raw", raw), ("smoothed", smooth)):
        row = figures(points, matrices, reference, face, args)
        print(f"{label:12s}{row['jitter']:10.2f}{row['error']:10.2f}{row['lag']:14.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
