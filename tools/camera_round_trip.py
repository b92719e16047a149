"""Camera decomposition round trip (issue: "to 1e-5 on 1,000 random cameras").

Composes the inverse camera (P_hat, q_hat) of random cameras
(:func:`tfface.geometry.camera.random_cameras`), decomposes it back to K, R, t, psi
(:func:`tfface.geometry.camera.decompose_inverse_camera`) and prints the worst relative error
over the cameras per quantity and dtype: K relative to its largest entry, R absolute,
t relative to its norm, psi relative. In float32 the error includes rounding the float64
camera to float32 on input.

Usage::

    python tools/camera_round_trip.py [--cameras 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tensorflow as tf

from tfface.geometry.camera import compose_inverse_camera, decompose_inverse_camera, random_cameras


def round_trip_errors(cameras, dtype: tf.DType) -> dict[str, float]:
    """Worst errors over the cameras of compose -> decompose in ``dtype``."""
    K, R, t, psi = cameras
    p_hat, q_hat = compose_inverse_camera(*(tf.constant(a, dtype) for a in cameras))
    K2, R2, t2, psi2 = (a.numpy().astype(np.float64) for a in decompose_inverse_camera(p_hat, q_hat))
    return {
        "K": float((np.abs(K2 - K).max(axis=(1, 2)) / np.abs(K).max(axis=(1, 2))).max()),
        "R": float(np.abs(R2 - R).max()),
        "t": float((np.linalg.norm(t2 - t, axis=1) / np.linalg.norm(t, axis=1)).max()),
        "psi": float((np.abs(psi2 - psi) / psi).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    cameras = random_cameras(args.cameras, args.seed)
    print(f"worst round-trip error over {args.cameras} random cameras")
    print(f"{'dtype':>8} {'K (rel)':>10} {'R (abs)':>10} {'t (rel)':>10} {'psi (rel)':>10}")
    for dtype in (tf.float64, tf.float32):
        e = round_trip_errors(cameras, dtype)
        print(f"{dtype.name:>8} {e['K']:>10.2e} {e['R']:>10.2e} {e['t']:>10.2e} {e['psi']:>10.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
