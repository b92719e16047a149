"""File input and output at the edges of the package: images and videos in, meshes and JSON out."""
