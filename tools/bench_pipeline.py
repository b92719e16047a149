"""Benchmark the tf.data input pipeline with augmentation (target: >= 200 images/s at 224x224).

Writes a folder of JPEGs (random smooth colour images, 250x250, like aligned face crops) unless
``--folder`` is given, then times folder -> decode -> square fit to 224 -> shuffle -> batch ->
random similarity + background fill (ImageProjectiveTransformV3) -> prefetch, side by side with
the same pipeline without augmentation. ``--tfrecords DIR`` times synthetic TFRecords
(`tfface data synth`) instead of JPEGs; ``--photos DIR[:FRAMING]`` (repeatable) times the real-photo
stream of training (:func:`tfface.data.photos.photo_dataset`: framing warp, with and without the
random similarity). Prints wall-clock images/s and CPU time per image (the
machine is shared: the CPU figure says what 2 idle cores would sustain).

    python tools/bench_pipeline.py [--images 2000] [--batch 32] [--size 224]
    python tools/bench_pipeline.py --photos ../shared/data/celeba:celeba --photos ../shared/data/aflw-crops:aflw-crops \
        --size 128 --batch 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from tfface.data.augment import SimilarityRange, augment_dataset
from tfface.data.framing import template_landmarks5
from tfface.data.photos import PhotoSource, photo_dataset
from tfface.data.images import image_folder_dataset
from tfface.data.tfrecords import read_tfrecords
from tfface.runtime import use_pooled_cpu_allocator


def write_jpegs(folder: Path, count: int, side: int = 250, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.uniform(0, 255, (5, 5, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
        image.save(folder / f"{i:05d}.jpg", quality=90)


def throughput(dataset: tf.data.Dataset, images: int) -> tuple[float, float]:
    """``(images per wall second, CPU milliseconds per image)`` over at least ``images`` images.

    CPU time is this process's user + system time: on a shared machine it does not grow with
    other people's load, so ``cores * 1000 / cpu_ms`` is what the pipeline sustains alone.
    """
    iterator = iter(dataset)
    for _ in range(3):  # warm-up: tracing, thread pools, autotune
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    seen = 0
    while seen < images:
        seen += int(next(iterator)["image"].shape[0])
    return seen / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / seen


def main() -> None:
    use_pooled_cpu_allocator()  # as the tfface command runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="folder of JPEG/PNG images (default: generate 256)")
    parser.add_argument("--tfrecords", type=Path, help="read synthetic TFRecords from this folder instead")
    parser.add_argument("--photos", action="append", help="DIR[:FRAMING]: time the real-photo training stream")
    parser.add_argument("--images", type=int, default=2000, help="images timed per variant")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        if args.photos:
            from tfface.morphable.loaders import load_default_model

            sources = [PhotoSource.parse(text) for text in args.photos]
            template5 = template_landmarks5(load_default_model())

            def pipeline(augment: bool) -> tf.data.Dataset:
                ranges = SimilarityRange(rotation=(-0.26, 0.26), scale=(0.9, 1.1), translation=0.05) if augment else None
                photos = photo_dataset(sources, args.size, template5, ranges)
                return photos.batch(args.batch, drop_remainder=True).map(lambda x: {"image": x}).prefetch(
                    tf.data.AUTOTUNE)
            what = "photo stream of " + ", ".join(args.photos) + " (framing warp always; augmentation = random similarity)"
        elif args.tfrecords is not None:
            def source():
                images = read_tfrecords(args.tfrecords, keys=("image",), shuffle_shards=True)
                if images.element_spec["image"].shape[0] != args.size:
                    images = images.map(lambda e: {"image": tf.image.resize(e["image"], [args.size, args.size])})
                return images.repeat()
            what = f"synthetic TFRecords in {args.tfrecords}"
        else:
            folder = args.folder
            if folder is None:
                folder = Path(scratch)
                write_jpegs(folder, 256)
            scan = image_folder_dataset(folder, args.size)[1]

            def source():
                return image_folder_dataset(scan, args.size, shuffle=True)[0].repeat()
            what = f"{len(scan.files)} JPEG/PNG files in {folder}"

        if not args.photos:
            def pipeline(augment: bool) -> tf.data.Dataset:
                if augment:
                    return augment_dataset(source(), args.batch, seed=0).prefetch(tf.data.AUTOTUNE)
                return source().batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

        plain, plain_cpu = throughput(pipeline(False), args.images)
        augmented, augmented_cpu = throughput(pipeline(True), args.images)
    cores = os.cpu_count() or 1
    print(f"source: {what}; batch {args.batch} at {args.size}x{args.size}, {args.images} images per run, "
          f"load average {os.getloadavg()[0]:.1f} on {cores} cores")
    print(f"without augmentation: {plain:.0f} images/s wall; {plain_cpu:.2f} CPU ms/image "
          f"(= {cores * 1000 / plain_cpu:.0f} images/s on {cores} idle cores)")
    print(f"with augmentation (similarity + background fill): {augmented:.0f} images/s wall; "
          f"{augmented_cpu:.2f} CPU ms/image (= {cores * 1000 / augmented_cpu:.0f} images/s on {cores} idle cores); "
          f"target >= 200")


if __name__ == "__main__":
    main()
