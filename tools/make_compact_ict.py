"""Make the compact ICT-FaceKit Light model that ships in ``tfface/assets/`` from the original.

Keeps what :func:`tfface.morphable.loaders.load_ict` reads: the mean (float32, mm), the identity
and expression bases rounded to float16 (mm), triangles, the 68 landmark vertices, the narrow
face area's vertex count and the mode names; drops ICT's own texture layout (``uv``,
``triangle_uv``). The archive is deflated at level 9 with fixed timestamps, so the same input
always gives the same bytes. Prints the file size and the largest rounding error per basis.

Usage::

    python3 tools/make_compact_ict.py [--source ../shared/models/ict_face_light.npz]
                                      [--out tfface/assets/ict_face_light.npz]
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from tfface import paths

#: Arrays copied unchanged, and the bases stored as float16.
KEPT = ("mean", "triangles", "landmarks68", "narrow_vertex_count", "identity_names", "expression_names")
HALF_PRECISION = ("identity_basis", "expression_basis")

#: Zip timestamp of every member (the earliest zip allows), for byte-identical output.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def compact_arrays(source: Path) -> dict[str, np.ndarray]:
    """The arrays of the compact model, read from the original ICT-FaceKit Light npz ``source``."""
    with np.load(source, allow_pickle=False) as data:
        arrays = {key: data[key] for key in KEPT}
        arrays.update({key: data[key].astype(np.float16) for key in HALF_PRECISION})
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an npz archive that :func:`numpy.load` reads, deterministically."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", FIXED_DATE), buffer.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def rounding_errors(source: Path, compact: Path) -> dict[str, float]:
    """Largest absolute difference (mm) per basis between ``compact`` and ``source``."""
    with np.load(source) as original, np.load(compact) as small:
        return {key: float(np.abs(small[key].astype(np.float32) - original[key]).max()) for key in HALF_PRECISION}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=paths.shared_dir() / "models" / "ict_face_light.npz",
                        help="original ICT-FaceKit Light npz (default: $TFFACE_SHARED/models/ict_face_light.npz)")
    parser.add_argument("--out", type=Path, default=paths.default_model_path(), help="compact npz to write")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source}: no such file (pass --source or set {paths.SHARED_ENV})")
    write_npz(args.out, compact_arrays(args.source))
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB (source {args.source.stat().st_size / 1e6:.2f} MB)")
    for key, error in rounding_errors(args.source, args.out).items():
        print(f"{key}: largest float16 rounding error {error:.4f} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
