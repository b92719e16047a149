"""Where tfface finds its files: the assets it ships and the optional shared research data.

The open default geometry ships inside the package (:data:`ASSETS_DIR`), so a bare clone or an
installed package works alone. Large research data (real photos, the BlazeFace detector, the
original ICT-FaceKit file) lives outside the repository in the *shared* folder: ``$TFFACE_SHARED``,
by default ``../shared`` beside the checkout. Nothing requires it; use :func:`shared_path` to ask
for a file there and get ``None`` where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Root of the repository checkout (the folder holding ``tfface/``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: The exported model shipped with the repository (``savedmodel/<name>/<version>``).
DEFAULT_MODEL = REPO_ROOT / "savedmodel" / "tfface_ict" / "20"

#: Data files shipped inside the package (see ``tfface/assets/README.md``).
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

#: Environment variable naming the shared research-data folder.
SHARED_ENV = "TFFACE_SHARED"


def shared_dir() -> Path:
    """The shared research-data folder: ``$TFFACE_SHARED``, else ``../shared`` beside the checkout.

    The folder may not exist; :func:`shared_path` checks.
    """
    return Path(os.environ.get(SHARED_ENV, REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path | None:
    """``shared_dir() / parts...`` where that file or folder exists, else ``None``.

    Args:
        parts: path components below the shared folder, e.g. ``("data", "celeba")``.
    """
    path = shared_dir().joinpath(*parts)
    return path if path.exists() else None


def default_model_path() -> Path:
    """The open default geometry shipped with the package: compact ICT-FaceKit Light npz."""
    return ASSETS_DIR / "ict_face_light.npz"


def original_ict_model_path() -> Path | None:
    """The original ICT-FaceKit Light npz in the shared folder (``models/ict_face_light.npz``), if present.

    :data:`ASSETS_DIR`'s compact copy is made from it by ``tools/make_compact_ict.py``.
    """
    return shared_path("models", "ict_face_light.npz")
