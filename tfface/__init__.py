"""tfface: unsupervised, model-based dense face alignment (Koizumi & Smith, ECCV 2020).

The package is organised by job (see DESIGN.md):

- :mod:`tfface.morphable` the 3D morphable model, its loaders and the flattened UV-3DMM,
- :mod:`tfface.geometry` camera maths, spherical harmonics and normals,
- :mod:`tfface.layers` Keras layers (sampling, least-squares solves),
- :mod:`tfface.render` a TensorFlow rasteriser and shader,
- :mod:`tfface.data` tf.data pipelines,
- :mod:`tfface.nets` image-to-image networks.
"""

__version__ = "0.1.0"
