"""Locations of the assets that ship beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

#: Root of the repository checkout (the folder holding ``tfface/``).
REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """Folder with the shared, read-only assets (``../shared`` beside the checkout).

    ``TFFACE_SHARED`` overrides the location.
    """
    return Path(os.environ.get("TFFACE_SHARED", REPO_ROOT.parent / "shared"))


def default_model_path() -> Path:
    """Path of the open default geometry, ICT-FaceKit Light (``ict_face_light.npz``)."""
    return shared_dir() / "models" / "ict_face_light.npz"
