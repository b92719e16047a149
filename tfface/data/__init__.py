"""Input pipelines (``tf.data``).

- :mod:`~tfface.data.synthetic`: random faces rendered from a UV-3DMM, with ground truth.
- :mod:`~tfface.data.tfrecords`: sharded TFRecord writer and reader of example dicts.
- :mod:`~tfface.data.tfds_sources`: TFDS ``celeb_a`` (training) and ``aflw2k3d`` (evaluation).
- :mod:`~tfface.data.images`: folders of JPEG/PNG images (unreadable files skipped and counted).
- :mod:`~tfface.data.augment`: random 2D similarity with background fill (supplement F, K).
- :mod:`~tfface.data.sheet`, :mod:`~tfface.data.commands`: contact sheets, ``tfface data ...``.
"""
