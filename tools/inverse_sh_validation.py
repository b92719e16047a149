"""Reproduce supplement D / Fig. 11: how well inverse-SH lighting imitates SH lighting.

For each of ``--lightings`` random lightings (coefficients ~ N(0, 0.2^2) plus a constant light
of intensity 0.9, the same for R, G and B) the inverse-SH coefficients are the least-squares fit
of ``1 / shading`` at 100,000 uniform random points on the sphere. The table gives, over those
same points, the max and RMS error of lighting intensity ``|s(n) - 1 / g(n)|`` between the
conventional shading ``s`` and the intensity ``1 / g`` the inverse model renders (a white
surface; see :func:`tfface.geometry.sh.inverse_lighting_errors`), plus the range of ``s``.
The paper reports max 0.049-0.272 and RMS 0.019-0.058 for its four lightings.

Usage::

    python tools/inverse_sh_validation.py [--lightings 8] [--seed 0] [--points 100000]
                                          [--preview spheres.png]

``--preview`` writes a PNG: the upper row spheres lit by SH, the lower row by inverse SH.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tensorflow as tf

from tfface.geometry.sh import (
    fit_inverse_sh,
    inverse_lighting_errors,
    random_sh_lighting,
    sample_sphere,
    sh_basis,
)


def sphere_images(sh_coeffs: np.ndarray, inverse_coeffs: np.ndarray, size: int = 128) -> np.ndarray:
    """Front views of a white sphere under each lighting, (2 * size, L * size, 3) uint8.

    Upper row: shading ``s(n)``; lower row: ``1 / g(n)``. Model axes as DESIGN.md (+z towards
    the viewer, +y up). Background black, values clipped to [0, 1].
    """
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(centres, -centres)
    inside = x * x + y * y < 1
    normals = np.stack([x, y, np.sqrt(np.clip(1 - x * x - y * y, 0, None))], -1)
    basis = sh_basis(tf.constant(normals)).numpy()
    shading = np.einsum("hwk,lk->lhw", basis, sh_coeffs)
    inverse = np.einsum("hwk,lk->lhw", basis, inverse_coeffs)
    rendered = np.where(inverse > 0, 1 / np.where(inverse > 0, inverse, 1), 0)
    rows = [np.concatenate(list(np.clip(s, 0, 1) * inside), axis=1) for s in (shading, rendered)]
    grey = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lightings", type=int, default=8, help="number of random lightings")
    parser.add_argument("--seed", type=int, default=0, help="seed of lightings and sample points")
    parser.add_argument("--points", type=int, default=100_000, help="sphere samples for fit and errors")
    parser.add_argument("--sigma", type=float, default=0.2, help="std of the random SH coefficients")
    parser.add_argument("--ambient", type=float, default=0.9, help="constant light intensity")
    parser.add_argument("--preview", help="write a PNG of lit spheres (upper SH, lower inverse SH)")
    args = parser.parse_args(argv)

    lightings = random_sh_lighting((args.lightings,), args.seed, args.sigma, args.ambient, tf.float64)
    inverse = fit_inverse_sh(lightings, args.points, args.seed)
    directions = sample_sphere(args.points, args.seed, tf.float64)
    max_error, rms_error = (e.numpy() for e in inverse_lighting_errors(lightings, inverse, directions))
    shading = tf.einsum("lk,nk->ln", lightings, sh_basis(directions)).numpy()

    print(f"{'lighting':>8} {'max error':>10} {'RMS error':>10} {'min s':>7} {'max s':>7}")
    for i in range(args.lightings):
        print(f"{i:>8d} {max_error[i]:>10.3f} {rms_error[i]:>10.3f} {shading[i].min():>7.3f} {shading[i].max():>7.3f}")
    print(
        f"{'range':>8} {max_error.min():.3f}-{max_error.max():.3f} {rms_error.min():.3f}-{rms_error.max():.3f}"
        "   (paper: max 0.049-0.272, RMS 0.019-0.058)"
    )
    if args.preview:
        from PIL import Image

        Image.fromarray(sphere_images(lightings.numpy(), inverse.numpy())).save(args.preview)
        print(f"preview written to {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
