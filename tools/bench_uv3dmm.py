"""Benchmark the UV-3DMM: build time of the default model and sampling time of a training batch.

Prints (best of several repeats, since other jobs share the machine):

* loading the default model (ICT narrow face + albedo prior) and building its UV-3DMM at S = 320
  (target < 30 s on 2 cores);
* sampling ``--points`` x ``--batch`` correspondences with all bases (target < 20 ms for
  10,000 x 8), beside its parts (locating the triangles, blending the geometry basis, blending the
  albedo basis), a floor (writing an output of the same size, ``tf.fill`` under XLA), the same
  sampler without XLA, and sampling plus the gradient with respect to ``uv``.

Usage: ``python3 tools/bench_uv3dmm.py [--repeats 50] [--points 10000] [--batch 8]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.morphable import sampling  # noqa: E402
from tfface.morphable.loaders import load_default_model  # noqa: E402
from tfface.morphable.uv3dmm import UVMorphableModel  # noqa: E402
from tfface.runtime import use_pooled_cpu_allocator  # noqa: E402


def best_of(repeats: int, function, *args) -> float:
    """Smallest wall time (ms) of ``repeats`` calls after one warm-up call; outputs are forced."""
    tf.nest.map_structure(lambda t: t.shape, function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = function(*args)
        tf.nest.map_structure(lambda t: t.shape, out)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    use_pooled_cpu_allocator()  # as the tfface command runs
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--build-repeats", type=int, default=3)
    args = parser.parse_args()

    build_times = []
    for _ in range(args.build_repeats):
        start = time.perf_counter()
        uv_model = UVMorphableModel.build(load_default_model(), resolution=args.resolution)
        build_times.append(time.perf_counter() - start)
    m, loc = uv_model.model, uv_model.locator
    print(f"default model: {m.num_vertices} vertices, {len(m.triangles)} triangles, "
          f"{m.num_shape}+{m.num_expression} shape+expression and {m.num_albedo} albedo modes; locator "
          f"{loc.children.shape[0]} nodes, depth {loc.depth}, {loc.candidates.shape[1]}+{loc.polar_bins.shape[2]} "
          f"candidates per point")
    print(f"load + build UV-3DMM at {args.resolution}: {min(build_times):.2f} s "
          f"(best of {args.build_repeats}; target < 30 s)")

    tables = uv_model.tables()
    rng = np.random.default_rng(0)
    uv = tf.constant(rng.uniform(0.0, 1.0, (args.batch, args.points, 2)).astype(np.float32))
    s = args.resolution
    total = best_of(args.repeats, uv_model.sample, uv)
    locate = tf.function(lambda x: sampling.locate(x, tables, s), jit_compile=True)
    triangle, bary, _ = locate(uv)
    ids = tf.gather(tables.triangles, triangle)
    blend = tf.function(sampling.blend, jit_compile=True)
    parts = {
        "locate triangles": best_of(args.repeats, locate, uv),
        "blend mean+shape+expression basis": best_of(args.repeats, blend, tables.basis, ids, bary),
        "blend albedo basis": best_of(args.repeats, blend, tables.albedo_basis, ids, bary),
    }
    rows = tables.mean.shape[1] + tables.basis.shape[1] + tables.albedo_mean.shape[1] + tables.albedo_basis.shape[1]
    shape = (args.batch, args.points, rows)
    fill = tf.function(lambda: tf.fill(shape, 1.0), jit_compile=True)
    floor = best_of(args.repeats, fill)
    plain = tf.function(lambda x: sampling.sample_tables(x, tables, s))
    unfused = best_of(max(3, args.repeats // 4), plain, uv)

    @tf.function
    def with_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = uv_model.sample(x)
            value = sum(tf.reduce_sum(t) for t in (out.mean, out.basis, out.albedo_mean, out.albedo_basis))
        return tape.gradient(value, x)

    backward = best_of(max(3, args.repeats // 4), with_gradient, uv)
    megabytes = 4 * np.prod(shape) / 2**20
    print(f"sample {args.points} points x {args.batch} images, all bases: {total:.1f} ms "
          f"(best of {args.repeats}; target < 20 ms; output {megabytes:.0f} MB)")
    for name, ms in parts.items():
        print(f"  {name}: {ms:.1f} ms")
    print(f"  floor, writing a {megabytes:.0f} MB output (tf.fill, XLA): {floor:.1f} ms")
    print(f"  same sampler without XLA: {unfused:.1f} ms")
    print(f"sample + gradient w.r.t. uv (training step's share): {backward:.1f} ms")


if __name__ == "__main__":
    main()
