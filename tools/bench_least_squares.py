"""Benchmark and noise curve of the geometric and photometric least-squares solves.

Timing (default): ms per image of both solves at Np = 10,000 samples, batch 8, with the
default model's full shape+expression basis (153 modes) and 40 albedo modes, forward and
forward+backward (gradients to every input), inside ``tf.function``; best of ``--repeats``
rounds that time every case and the matmul peak in turn (other processes share the machine).
The achieved GFLOP/s (analytic count of the products that form and refine the normal
equations and of the analytic backward pass, see ``structured_flops``) is printed as a ratio to
this machine's large-matmul rate (2048 x 2048 float32 ``tf.matmul``), measured in the same
rounds. A roofline column puts each case against its own bound, ``min(peak, intensity x
bandwidth)``: ``intensity`` is the FLOPs per byte of basis traffic (``basis_passes``), and
``bandwidth`` is the read rate of a 256 MB ``tf.reduce_sum``, also measured in the same rounds.
No arrangement of the products lifts a case above its roof, so a case whose roof is below half
the matmul peak cannot reach 50% of it without moving fewer bytes. Like the ``tfface`` command,
the benchmark runs with TensorFlow's pooling CPU allocator (:mod:`tfface.runtime`);
``TF_CPU_ALLOCATOR_USE_BFC=false`` measures the default one.

Noise curve (``--noise-curve``): synthetic problems from the default ICT geometry with known
answers; pixels and depths get Gaussian noise of a given fraction of their spread (pixel colours
a relative noise of the same fraction); prints median errors of the recovered coefficients,
camera and lighting per noise level.

Usage::

    python3 tools/bench_least_squares.py [--batch 8] [--samples 10000] [--repeats 5]
    python3 tools/bench_least_squares.py --noise-curve [--samples 4000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfface.layers import least_squares_synthetic as synthetic
from tfface.layers.geometric import solve_geometry
from tfface.layers.photometric import solve_photometry
from tfface.runtime import cpu_allocator_name, use_pooled_cpu_allocator

NUM_IDENTITY, NUM_EXPRESSION, NUM_ALBEDO = 100, 53, 40


def run_once(function) -> float:
    """Wall time (s) of one call, one element of each result fetched.

    Not ``numpy()`` of every result: that copies the basis-sized gradient (147 MB at batch 8)
    into fresh host memory, which is no part of a solve.
    """
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: tf.reshape(t, [-1])[:1].numpy(), function())
    return time.perf_counter() - start


def matmul_peak_function(size: int = 2048):
    """A ``size`` x ``size`` float32 matmul and its FLOP count."""
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    return tf.function(lambda: tf.reduce_sum(tf.matmul(a, b))), 2 * size**3


def bandwidth_function(megabytes: int = 256):
    """A ``tf.reduce_sum`` over ``megabytes`` of float32 and the bytes it reads."""
    values = tf.random.normal([megabytes * 2**18])
    return tf.function(lambda: tf.reduce_sum(values)), megabytes * 2**20


def basis_passes(refinement_steps: int = 1) -> tuple[int, int]:
    """Passes over the sampled basis (B, P, 3, K) of a structured solve: forward, forward+backward.

    Forward: forming the normal equations (one read), two per refinement step (``M x`` and
    ``M^T W e``) and the output residual (one). Backward: ``A^T g_e`` and ``A z`` (two reads)
    and the basis gradient (one write).
    """
    forward = 2 + 2 * refinement_steps
    return forward, forward + 3


def structured_flops(samples: int, q: int, shared: bool, modes: int, refinement_steps: int = 1) -> tuple[float, float]:
    """Forward and forward+backward FLOPs per image of a structured solve (products only).

    ``P`` samples, ``q`` features per row (shared by the 3 channels or not), ``K = modes``.
    Forward: model block ``2 (3P) K^2``; cross block and model right-hand side together
    ``2 P (q + 3)(3K)`` (shared) or ``2 P (3q + 3)(3K)`` (per channel, channel diagonal kept);
    feature block and feature right-hand side; each refinement
    step recomputes ``M x`` and ``M^T W e`` (``2 (3P) K`` each) and the features' share; the
    output residual one ``M x``. Backward (analytic gradient): ``A^T g_e``, ``A z`` and the
    rank-2 basis gradient ``(3P, 2) x (2, K)``: ``4 x 2 (3P) K`` plus the features' share.
    """
    rows = 3 * samples
    cross = 2 * samples * ((q if shared else 3 * q) + 3) * 3 * modes
    feature_block = 2 * samples * q * q * (1 if shared else 3)
    forming = 2 * rows * modes**2 + cross + feature_block + 2 * rows * q
    per_pass = 2 * rows * modes + 2 * rows * q
    forward = forming + (2 * refinement_steps + 1) * per_pass
    backward = 4 * per_pass
    return forward, forward + backward


def random_inputs(batch: int, samples: int, seed: int = 0) -> dict[str, tf.Tensor]:
    """Random float32 inputs of realistic scale for both solves."""
    rng = np.random.default_rng(seed)
    modes = NUM_IDENTITY + NUM_EXPRESSION
    normals = rng.normal(size=(batch, samples, 3))
    arrays = {
        "pixels": rng.uniform(0, 224, (batch, samples, 2)),
        "depth": rng.uniform(550, 650, (batch, samples)),
        "weights": rng.uniform(0, 1, (batch, samples)),
        "mean": rng.normal(0, 50, (batch, samples, 3)),
        "basis": rng.normal(0, 2, (batch, samples, 3, modes)),
        "shape_weights": np.ones(modes),
        "image": rng.uniform(0.1, 0.9, (batch, samples, 3)),
        "normals": normals / np.linalg.norm(normals, axis=-1, keepdims=True),
        "albedo_mean": rng.uniform(0.3, 0.7, (batch, samples, 3)),
        "albedo_basis": rng.normal(0, 0.03, (batch, samples, 3, NUM_ALBEDO)),
        "albedo_weights": np.ones(NUM_ALBEDO),
    }
    return {name: tf.constant(value, tf.float32) for name, value in arrays.items()}


def geometric_call(x: dict[str, tf.Tensor], steps: int, pixels, depth, weights, mean, basis) -> dict[str, tf.Tensor]:
    return solve_geometry(
        pixels, depth, weights, mean, basis, x["shape_weights"], translation_weight=1.0, refinement_steps=steps
    )


def photometric_call(x: dict[str, tf.Tensor], steps: int, image, normals, weights, mean, basis) -> dict[str, tf.Tensor]:
    return solve_photometry(image, normals, weights, mean, basis, x["albedo_weights"], refinement_steps=steps)


def scalar_loss(outputs: dict[str, tf.Tensor]) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(tf.square(v)) for k, v in outputs.items() if k != "well_posed"])


def benchmark(args: argparse.Namespace) -> None:
    x = random_inputs(args.batch, args.samples)
    cases = {}
    for steps in (1, 0):
        cases[f"geometric r{steps}"] = (
            geometric_call, steps, ["pixels", "depth", "weights", "mean", "basis"],
            structured_flops(args.samples, 4, True, NUM_IDENTITY + NUM_EXPRESSION, steps),
        )
        cases[f"photometric r{steps}"] = (
            photometric_call, steps, ["image", "normals", "weights", "albedo_mean", "albedo_basis"],
            structured_flops(args.samples, 9, False, NUM_ALBEDO, steps),
        )
    peak_function, peak_flops = matmul_peak_function()
    stream_function, stream_bytes = bandwidth_function()
    timed = {"peak": (lambda: peak_function(), peak_flops), "bandwidth": (lambda: stream_function(), stream_bytes)}
    intensity = {}  # FLOPs per byte of basis traffic, by case
    for name, (call, steps, keys, (forward_flops, total_flops)) in cases.items():
        basis = x[keys[-1]]  # (B, P, 3, K)
        forward_bytes, total_bytes = (
            passes * args.samples * 3 * basis.shape[-1] * basis.dtype.size for passes in basis_passes(steps)
        )
        inputs = [x[k] for k in keys]

        @tf.function
        def forward(*tensors, call=call, steps=steps):
            return scalar_loss(call(x, steps, *tensors))

        @tf.function
        def forward_backward(*tensors, call=call, steps=steps):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                loss = scalar_loss(call(x, steps, *tensors))
            return loss, tape.gradient(loss, tensors)

        timed[(name, "forward")] = (lambda f=forward, i=inputs: f(*i), forward_flops * args.batch)
        timed[(name, "forward+backward")] = (lambda f=forward_backward, i=inputs: f(*i), total_flops * args.batch)
        intensity[(name, "forward")] = forward_flops / forward_bytes
        intensity[(name, "forward+backward")] = total_flops / total_bytes
    # Round robin over all cases and the matmul peak, best of the repeats for each: other
    # processes share the machine, so every case gets the same chances at a quiet moment.
    for function, _ in timed.values():
        run_once(function)  # trace and warm up
    best = dict.fromkeys(timed, np.inf)
    for _ in range(args.repeats):
        for key, (function, _) in timed.items():
            best[key] = min(best[key], run_once(function))
    peak = peak_flops / best.pop("peak") / 1e9
    bandwidth = stream_bytes / best.pop("bandwidth") / 1e9
    print(f"large-matmul peak (2048^2 float32 tf.matmul, best of the same round robin): {peak:.1f} GFLOP/s")
    print(f"read bandwidth (tf.reduce_sum over 256 MB float32, same round robin): {bandwidth:.1f} GB/s")
    print(f"CPU allocator: {cpu_allocator_name()} (tfface.runtime)")
    print(f"batch {args.batch}, Np = {args.samples}, best of {args.repeats}; rN = N refinement steps "
          "(r1 is the layers' default; r0 skips refinement: on exact data ~5e-3 instead of ~1e-5 relative "
          "coefficient error with the full basis)")
    print(f"{'solve':15s} {'pass':17s} {'ms/image':>9s} {'GFLOP/s':>8s} {'of peak':>8s} {'FLOP/B':>7s} "
          f"{'roof':>6s} {'of roof':>8s}")
    for (name, label), seconds in best.items():
        rate = timed[(name, label)][1] / seconds / 1e9
        roof = min(peak, intensity[(name, label)] * bandwidth)
        print(f"{name:15s} {label:17s} {1e3 * seconds / args.batch:9.2f} {rate:8.1f} {rate / peak:8.1%} "
              f"{intensity[(name, label)]:7.1f} {roof:6.0f} {rate / roof:8.1%}")


NOISE_LEVELS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def noise_curve(args: argparse.Namespace) -> None:
    geometry = synthetic.load_ict_geometry(NUM_IDENTITY, NUM_EXPRESSION)
    albedo_model = synthetic.random_albedo_model(np.random.default_rng(1), len(geometry.mean), NUM_ALBEDO)
    print(
        f"median relative errors over {args.batch} random faces, Np = {args.samples}, "
        f"{NUM_IDENTITY}+{NUM_EXPRESSION} shape modes (alpha^2 = {args.shape_weight}), "
        f"{NUM_ALBEDO} albedo modes; noise = fraction of pixel/depth spread (colour: relative);\n"
        "shape = RMS vertex error (mm), R = rotation angle error (degrees), others relative"
    )
    rows = [
        synthetic.noisy_fit_errors(geometry, albedo_model, level, args.batch, args.samples, args.shape_weight, seed=7)
        for level in tqdm(NOISE_LEVELS, desc="noise levels", leave=False)
    ]
    print(f"{'noise':>6s} " + " ".join(f"{k:>13s}" for k in rows[0]))
    for level, row in zip(NOISE_LEVELS, rows):
        print(f"{level:6.3f} " + " ".join(f"{v:13.3g}" for v in row.values()))


def main() -> None:
    use_pooled_cpu_allocator()  # as the tfface command runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--noise-curve", action="store_true", help="print the noise-vs-error curve")
    parser.add_argument("--shape-weight", type=float, default=1.0,
                        help="alpha^2 of every shape mode in the noise curve (sample weights are 1)")
    args = parser.parse_args()
    noise_curve(args) if args.noise_curve else benchmark(args)


if __name__ == "__main__":
    main()
