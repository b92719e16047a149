"""Shared fixtures: the open default model and small synthetic models made on the fly."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from tfface import paths


@pytest.fixture(scope="session")
def default_model_path():
    path = paths.default_model_path()
    assert path.exists(), f"the default model is expected at {path} (../shared/models)"
    return path
