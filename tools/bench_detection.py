"""Share of the AFLW2000-3D dev faces BlazeFace finds, per yaw bin, on the full photos; detector latency.

Every dev photo (450 x 450, the whole picture, not a crop) goes through
:class:`tfface.detection.blazeface.FaceDetector`; a face counts as found when a detection encloses
most of its 68 annotated landmarks and has about its size (:func:`tfface.detection.evaluation.match`).
The table shows, per |yaw| bin, the share found by each pass alone (at its model's threshold), by
the default passes merged, with the fallback pass where they find nothing, and by the default
detector (also adding the supplementary tiles' faces where no other detection is), and how many detections matched no annotated face
(other people in the photo, or false detections). Last, the detector's latency per photo (p50 and
p90, wall-clock, all passes, from the decoded picture to the merged detections).

    python tools/bench_detection.py [--photos DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from tfface.detection import blazeface
from tfface.detection.evaluation import found_by_yaw, load_dev_pictures, match
from tfface.paths import shared_dir


def run(detector: blazeface.FaceDetector, pictures, landmarks) -> tuple[np.ndarray, int, list[float]]:
    """Found flags ``(N,)``, detections matching no annotated face, and seconds per picture."""
    found, unmatched, seconds = [], 0, []
    for picture, points in zip(pictures, landmarks):
        start = time.perf_counter()
        detections = detector(picture)
        seconds.append(time.perf_counter() - start)
        found.append(match(detections, points) is not None)
        unmatched += len(detections) - int(found[-1])
    return np.array(found), unmatched, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=shared_dir() / "data" / "aflw2000-3d-dev",
                        help="an AFLW2000-3D dev folder (images/, landmarks.npz)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N photos")
    args = parser.parse_args(argv)
    if not (args.photos / "landmarks.npz").is_file():
        parser.error(f"{args.photos} is not an AFLW2000-3D dev folder (set TFFACE_SHARED or pass --photos)")
    dev = load_dev_pictures(args.photos, args.limit)
    pictures, landmarks, yaw = dev.pictures, dev.landmarks, dev.yaw
    systems = {p.name: blazeface.FaceDetector([p], fallback=(), supplement=())
               for p in blazeface.DEFAULT_PASSES + blazeface.DEFAULT_FALLBACK + blazeface.DEFAULT_SUPPLEMENT}
    systems["passes merged"] = blazeface.FaceDetector(fallback=(), supplement=())
    systems["passes merged + fallback"] = blazeface.FaceDetector(supplement=())
    systems["default (+ fallback + supplement)"] = blazeface.FaceDetector()
    rows, latency = {}, {}
    for name, detector in systems.items():
        detector(pictures[0])  # warm-up
        found, unmatched, seconds = run(detector, pictures, landmarks)
        rows[name] = (found_by_yaw(found, yaw), unmatched)
        latency[name] = seconds
    bins = next(iter(rows.values()))[0]
    print(f"{len(pictures)} AFLW2000-3D dev photos ({pictures[0].shape[1]}x{pictures[0].shape[0]}, whole): "
          "share of faces found (%) by |yaw|")
    print(f"{'detector':32s}" + "".join(f"{label:>10s}" for label in bins) + f"{'unmatched':>11s}")
    print(f"{'faces':32s}" + "".join(f"{count:10d}" for _, count in bins.values()))
    for name, (table, unmatched) in rows.items():
        print(f"{name:32s}" + "".join(f"{100 * share:10.1f}" for share, _ in table.values()) + f"{unmatched:11d}")
    print("\nlatency per photo (ms, wall clock): " + "; ".join(
        f"{name} p50 {1000 * statistics.median(s):.1f}, p90 {1000 * np.percentile(s, 90):.1f}"
        for name, s in latency.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
