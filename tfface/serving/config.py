"""The TF Serving model configuration (``models.config``) of an export root.

TF Serving reads a text-format ``ModelServerConfig``; every ``<root>/<name>/`` holding numeric
version folders with a ``saved_model.pb`` becomes one entry, served at its latest version. Paths
are written relative to ``base_path`` (default ``/models``, where the official Docker image
mounts the root)::

    docker run -p 8500:8500 -p 8501:8501 -v "$PWD/savedmodel:/models" tensorflow/serving \\
        --model_config_file=/models/models.config
"""

from __future__ import annotations

from pathlib import Path

from tfface.errors import InputError


def served_models(root: str | Path) -> list[str]:
    """Names under ``root`` with at least one numeric version folder holding ``saved_model.pb``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: export root does not exist")
    return sorted(model.name for model in root.iterdir() if model.is_dir() and any(
        version.name.isdigit() and (version / "saved_model.pb").is_file() for version in model.iterdir()))


def models_config_text(names: list[str], base_path: str = "/models") -> str:
    """Text-format ``ModelServerConfig`` serving the latest version of each model in ``names``."""
    if not names:
        raise InputError("no exported model to serve")
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{base_path.rstrip("/")}/{name}"\n'
        f'    model_platform: "tensorflow"\n    model_version_policy {{ latest {{ num_versions: 1 }} }}\n  }}\n'
        for name in names)
    return f"model_config_list {{\n{entries}}}\n"


def write_models_config(root: str | Path, base_path: str = "/models") -> Path:
    """Write ``<root>/models.config`` for the models under ``root``; return its path."""
    path = Path(root) / "models.config"
    path.write_text(models_config_text(served_models(root), base_path))
    return path
