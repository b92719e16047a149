"""Benchmark the TensorFlow rasteriser and shader on the default model.

Prints the best-of-N wall time to rasterise (z-buffer, ids, barycentrics, depth) and to render
(rasterise + normals + SH shading + background) a batch of the default model's hole-filled mesh
under random synthetic cameras; the issue's target is 8 images at 256x256 in under 300 ms.

    python tools/bench_render.py [--batch 8] [--size 256] [--repeats 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

from tfface.data.synthetic import SynthesisConfig, SyntheticFaces
from tfface.morphable.loaders import load_default_model
from tfface.morphable.uv3dmm import UVMorphableModel
from tfface.render.rasterizer import rasterize
from tfface.render.shader import render
from tfface.runtime import use_pooled_cpu_allocator


def best_time(function, repeats: int) -> float:
    """Best wall time in seconds of ``function()`` (results forced to host) after one warm-up."""
    tf.nest.map_structure(np.asarray, function())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(np.asarray, function())
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    use_pooled_cpu_allocator()  # as the tfface command runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    uv_model = UVMorphableModel.build(load_default_model())
    model = uv_model.model
    faces = SyntheticFaces(uv_model, SynthesisConfig(image_size=args.size))
    seeds = tf.stack([tf.zeros([args.batch], tf.int64), tf.range(args.batch, dtype=tf.int64)], -1)
    p = faces.sample_parameters(seeds)
    vertices = tf.constant(np.repeat(model.vertices(np.zeros(0), np.zeros(0))[None], args.batch, 0))
    albedo = tf.constant(np.repeat(model.albedo_mean[None], args.batch, 0))
    background = tf.zeros([args.batch, args.size, args.size, 3])
    triangles = tf.constant(model.triangles)

    raster = tf.function(lambda: rasterize(vertices, triangles, p["K"], p["R"], p["t"], args.size, args.size))
    shaded = tf.function(lambda: render(vertices, triangles, albedo, p["K"], p["R"], p["t"], p["lighting"],
                                        args.size, args.size, background).image)
    coverage = float(tf.reduce_mean(raster().mask))
    t_raster = best_time(raster, args.repeats)
    t_render = best_time(shaded, args.repeats)
    print(f"mesh: {model.num_vertices} vertices, {model.triangles.shape[0]} triangles; "
          f"batch {args.batch} at {args.size}x{args.size}, face covers {100 * coverage:.0f}% of pixels")
    print(f"rasterise: {1000 * t_raster:.1f} ms per batch (best of {args.repeats})")
    print(f"render (rasterise + shade): {1000 * t_render:.1f} ms per batch (target < 300 ms for 8 at 256x256)")


if __name__ == "__main__":
    main()
