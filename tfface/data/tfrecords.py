"""Sharded, GZIP-compressed TFRecord files of example dicts, and their reader.

A folder holds ``<prefix>-00000-of-00004.tfrecord.gz`` shards and ``spec.json``, which records
for every key its dtype, shape and encoding. Images (key ``"image"``, float32 in [0, 1]) are
stored as 8-bit PNG (quantised to 1/255); every other tensor is stored losslessly with
``tf.io.serialize_tensor``. The reader returns the same dict (same keys, dtypes and shapes).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow as tf

from tfface.errors import InputError

SPEC_FILE = "spec.json"
SPEC_FORMAT = "tfface-tfrecords/1"
#: Keys stored as PNG.
PNG_KEYS = ("image",)


def _spec_of(element_spec: dict) -> dict:
    spec = {}
    for key, tensor_spec in element_spec.items():
        if None in tensor_spec.shape:
            raise InputError(f"TFRecord key {key!r} needs a static shape, got {tensor_spec.shape}")
        spec[key] = {"dtype": tensor_spec.dtype.name, "shape": list(tensor_spec.shape),
                     "encoding": "png" if key in PNG_KEYS else "tensor"}
    return spec


def _serialize(spec: dict) -> Callable[[dict], tf.Tensor]:
    def serialize(example: dict) -> tf.Tensor:
        features = {}
        for key, entry in spec.items():
            value = example[key]
            if entry["encoding"] == "png":
                data = tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(value, 0.0, 1.0) * 255.0), tf.uint8))
            else:
                data = tf.io.serialize_tensor(value)
            features[key] = data
        keys = sorted(features)
        return tf.io.serialize_tensor(tf.stack([features[k] for k in keys]))
    return serialize


def write_tfrecords(dataset: tf.data.Dataset, out_dir: str | os.PathLike, count: int, *,
                    examples_per_shard: int = 256, prefix: str = "data",
                    progress: Callable[[int], None] | None = None) -> list[str]:
    """Write the first ``count`` examples of an unbatched dict dataset as sharded TFRecords.

    Args:
        dataset: yields dicts of fixed-shape tensors.
        out_dir: created if missing; existing shards with the same prefix are overwritten.
        count: number of examples to write (the dataset must have at least that many).
        examples_per_shard: examples per file.
        prefix: shard file name prefix.
        progress: called with the number of examples written after each one (e.g. tqdm.update).

    Returns:
        The shard paths.
    """
    if count <= 0 or examples_per_shard <= 0:
        raise InputError(f"count and examples_per_shard must be positive, got {count}, {examples_per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = _spec_of(dataset.element_spec)
    num_shards = math.ceil(count / examples_per_shard)
    paths = [str(out / f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord.gz") for i in range(num_shards)]
    serialized = dataset.take(count).map(_serialize(spec), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    written = 0
    writer = None
    for record in serialized.as_numpy_iterator():
        if written % examples_per_shard == 0:
            if writer is not None:
                writer.close()
            writer = tf.io.TFRecordWriter(paths[written // examples_per_shard], options)
        writer.write(record)
        written += 1
        if progress is not None:
            progress(1)
    if writer is not None:
        writer.close()
    if written != count:
        raise InputError(f"the dataset ended after {written} of {count} examples")
    meta = {"format": SPEC_FORMAT, "count": count, "prefix": prefix, "shards": [Path(p).name for p in paths],
            "features": spec}
    (out / f"{prefix}-{SPEC_FILE}").write_text(json.dumps(meta, indent=1))
    return paths


def read_spec(folder: str | os.PathLike, prefix: str = "data") -> dict:
    """The metadata written by :func:`write_tfrecords` (raises InputError if missing/invalid)."""
    path = Path(folder) / f"{prefix}-{SPEC_FILE}"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is missing or not valid JSON ({error}); was the folder written by "
                         "`tfface data synth`?") from None
    if meta.get("format") != SPEC_FORMAT:
        raise InputError(f"{path} has format {meta.get('format')!r}, expected {SPEC_FORMAT!r}")
    return meta


def read_tfrecords(folder: str | os.PathLike, prefix: str = "data", *, keys: Sequence[str] | None = None,
                   shuffle_shards: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Read the examples written by :func:`write_tfrecords` back as dicts of tensors.

    Args:
        folder, prefix: where and under which name the shards were written.
        keys: decode only these entries (e.g. ``("image",)`` for training); None: all.
        shuffle_shards: read the shards in a seeded random order, several at once (examples
            interleaved); otherwise the examples come in the order they were written.
        seed: shard shuffling seed.
    """
    meta = read_spec(folder, prefix)
    spec = meta["features"]
    stored = sorted(spec)
    wanted = stored if keys is None else list(keys)
    unknown = sorted(set(wanted) - set(stored))
    if unknown:
        raise InputError(f"{folder} has no {unknown}; stored keys: {stored}")
    paths = [str(Path(folder) / name) for name in meta["shards"]]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise InputError(f"missing TFRecord shards: {missing}")
    if shuffle_shards:  # shard order shuffled and shards read in parallel (examples interleaved)
        order = tf.random.experimental.stateless_shuffle(tf.constant(paths), seed=[seed, 0])
        records = tf.data.TFRecordDataset(order, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
    else:  # the order in which the examples were written
        records = tf.data.TFRecordDataset(paths, compression_type="GZIP")

    def parse(record):
        fields = tf.io.parse_tensor(record, tf.string)
        example = {}
        for key in wanted:
            i, entry = stored.index(key), spec[key]
            dtype = tf.as_dtype(entry["dtype"])
            if entry["encoding"] == "png":
                value = tf.cast(tf.io.decode_png(fields[i], channels=entry["shape"][-1]), dtype) / 255.0
            else:
                value = tf.io.parse_tensor(fields[i], dtype)
            example[key] = tf.ensure_shape(value, entry["shape"])
        return example

    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
