"""Mesh writers: Wavefront OBJ and binary PLY, both with per-vertex colours.

Vertices are written as given (model space, millimetres, +y up, +z towards the viewer);
triangles are counter-clockwise seen from the front (outward normals), as in the morphable model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfface.errors import InputError


def _checked(vertices, triangles, colours) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate ``(V, 3)`` finite vertices, ``(T, 3)`` indices in range and ``(V, 3)`` colours in [0, 1]."""
    vertices = np.asarray(vertices, np.float64)
    triangles = np.asarray(triangles)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise InputError(f"vertices must be (V, 3), got {vertices.shape}")
    if not np.all(np.isfinite(vertices)):
        raise InputError("vertices contain NaN or infinite values")
    if triangles.ndim != 2 or triangles.shape[1] != 3 or not np.issubdtype(triangles.dtype, np.integer):
        raise InputError(f"triangles must be integer (T, 3), got {triangles.dtype} {triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise InputError(f"triangle indices must lie in [0, {len(vertices)})")
    if colours is not None:
        colours = np.asarray(colours, np.float64)
        if colours.shape != vertices.shape:
            raise InputError(f"colours must be (V, 3) like the vertices {vertices.shape}, got {colours.shape}")
        if not np.all(np.isfinite(colours)):
            raise InputError("colours contain NaN or infinite values")
        colours = np.clip(colours, 0.0, 1.0)
    return vertices, triangles.astype(np.int64), colours


def write_obj(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray | None = None) -> None:
    """Write a Wavefront OBJ: ``v x y z [r g b]`` lines (colours in [0, 1]), then 1-based ``f`` lines.

    Args:
        path: output file.
        vertices: ``(V, 3)`` mm.
        triangles: ``(T, 3)`` 0-based vertex indices.
        colours: optional ``(V, 3)`` RGB in [0, 1] (clipped); the widespread ``v x y z r g b``
            extension read by MeshLab, Blender and trimesh.
    """
    vertices, triangles, colours = _checked(vertices, triangles, colours)
    rows = np.hstack([vertices, colours]) if colours is not None else vertices
    fmt = " ".join(["%.4f"] * 3 + ["%.4f"] * (3 if colours is not None else 0))
    with open(path, "w") as handle:
        handle.write("# tfface reconstruction (mm, +y up, +z towards the viewer)\n")
        np.savetxt(handle, rows, fmt="v " + fmt)
        np.savetxt(handle, triangles + 1, fmt="f %d %d %d")


def write_ply(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray | None = None) -> None:
    """Write a binary little-endian PLY with float32 ``x y z``, optional uchar ``red green blue``
    (colours in [0, 1] scaled to 0..255) and uchar-counted int32 triangle lists."""
    vertices, triangles, colours = _checked(vertices, triangles, colours)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    records = np.empty(len(vertices), dtype=fields)
    for axis, name in enumerate("xyz"):
        records[name] = vertices[:, axis]
    if colours is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            records[name] = np.round(colours[:, channel] * 255.0).astype(np.uint8)
    faces = np.empty(len(triangles), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    faces["count"] = 3
    faces["indices"] = triangles
    header = ["ply", "format binary_little_endian 1.0", "comment tfface reconstruction (mm)",
              f"element vertex {len(vertices)}", "property float x", "property float y", "property float z"]
    if colours is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(triangles)}", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(records.tobytes())
        handle.write(faces.tobytes())
