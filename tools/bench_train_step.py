"""Training step time per batch of 8 for the small and the paper (224) configurations.

Prints, side by side in one run, the median wall time of one ``train_step`` (forward, both
least-squares solves, backward, Adam update) in float32, with the mixed-bfloat16 U-Net, and
mixed bfloat16 without XLA for the UV-3DMM sampling and the normals (``FaceModel.use_xla``
off, as in an export), and the U-Net-only step for reference, on synthetic faces. The least
squares always run in float32.

    python tools/bench_train_step.py [--configs small paper] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.data.synthetic import SynthesisConfig, SyntheticFaces  # noqa: E402
from tfface.model import FaceModel  # noqa: E402
from tfface.morphable.loaders import load_default_model  # noqa: E402
from tfface.morphable.uv3dmm import UVMorphableModel  # noqa: E402
from tfface.runtime import cpu_allocator_name, use_pooled_cpu_allocator  # noqa: E402
from tfface.training.config import CONFIGS  # noqa: E402


def median_time(step, repeats: int) -> float:
    step()  # trace and warm up
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench(uv_model, name: str, batch: int, repeats: int, mixed: bool, xla: bool) -> tuple[float, float]:
    config = CONFIGS[name].replace(mixed_precision=mixed, batch_size=batch)
    images = next(iter(SyntheticFaces(uv_model, SynthesisConfig(image_size=config.image_size))
                       .dataset(batch, seed=0, batch_size=batch).batch(batch)))["image"]
    model = FaceModel(uv_model, config)
    model.use_xla = xla
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    model.build_for_training()
    full = tf.function(lambda: model.train_step(images))
    optimizer = keras.optimizers.Adam()

    @tf.function
    def unet_only():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.predict_maps(images, training=True))
        variables = model.unet.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    return median_time(full, repeats), median_time(unet_only, repeats)


def main() -> None:
    use_pooled_cpu_allocator()  # as the tfface command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["small", "paper"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    uv_model = UVMorphableModel.build(load_default_model())
    print(f"batch {args.batch}, median of {args.repeats} steps, {os.cpu_count()} CPU cores, {cpu_allocator_name()} CPU allocator")
    print(f"{'config':<8} {'size':>5} {'samples':>8} {'variant':<22} {'train step (s)':>15} {'U-Net only (s)':>15}")
    variants = {"float32": (False, True), "mixed_bfloat16": (True, True), "mixed_bfloat16, no XLA": (True, False)}
    for name in args.configs:
        config = CONFIGS[name]
        results = {}
        for label, (mixed, xla) in variants.items():
            results[label] = bench(uv_model, name, args.batch, args.repeats, mixed, xla)
            print(f"{name:<8} {config.image_size:>5} {config.num_samples:>8} {label:<22} "
                  f"{results[label][0]:15.3f} {results[label][1]:15.3f}", flush=True)
        float32, mixed, no_xla = (results[label] for label in variants)
        print(f"{name:<8} bfloat16 speed-up: train step x{float32[0] / mixed[0]:.2f}, "
              f"U-Net x{float32[1] / mixed[1]:.2f}; XLA speed-up of the train step x{no_xla[0] / mixed[0]:.2f}")


if __name__ == "__main__":
    main()
