"""``tf.distribute`` strategies and the input pipeline that splits a global batch over workers.

``make_strategy("multiworker")`` reads the cluster from the ``TF_CONFIG`` environment variable
(``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``).
:func:`distribute_batches` gives every replica its slice of the same global batch, so a
distributed step sees exactly the images of one single-worker step on that batch.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import tensorflow as tf

from tfface.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable

#: Accepted names of :func:`make_strategy`.
STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (see :data:`STRATEGIES`).

    Raises:
        InputError: unknown name, or ``multiworker`` without a valid ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"]
        except (KeyError, ValueError, TypeError) as error:
            raise InputError("the multiworker strategy needs TF_CONFIG with cluster.worker and task "
                             f"entries ({error})") from None
        if not cluster:
            raise InputError("TF_CONFIG lists no workers")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise InputError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def distribute_batches(strategy: tf.distribute.Strategy, make_dataset: Callable[[], tf.data.Dataset],
                       global_batch_size: int) -> tf.distribute.DistributedDataset | tf.data.Dataset:
    """A distributed dataset in which each replica gets its slice of every global batch.

    Args:
        strategy: the strategy.
        make_dataset: ``() -> tf.data.Dataset`` of unbatched examples, identical on every worker
            (same order); it is batched by ``global_batch_size`` and each replica keeps its slice.
        global_batch_size: must be divisible by the number of replicas.

    Returns:
        A ``tf.distribute.DistributedDataset`` (or the plain batched dataset without replicas).
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise InputError(f"global batch {global_batch_size} is not divisible by {replicas} replicas")
    if replicas == 1:
        return make_dataset().batch(global_batch_size, drop_remainder=True)
    per_replica = global_batch_size // replicas

    def dataset_fn(context: tf.distribute.InputContext):
        # This input pipeline feeds ``local`` replicas, consecutive slices of each global batch.
        local = context.num_replicas_in_sync // context.num_input_pipelines
        start = context.input_pipeline_id * local * per_replica
        batches = make_dataset().batch(global_batch_size, drop_remainder=True)
        mine = batches.map(lambda x: tf.nest.map_structure(lambda t: t[start:start + local * per_replica], x))
        return mine.unbatch().batch(per_replica, drop_remainder=True)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    return strategy.distribute_datasets_from_function(dataset_fn, options)
