"""The ``tfface`` command selects TensorFlow's pooling CPU allocator, unless the environment chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tfface.runtime import POOLED_CPU_ALLOCATOR

#: A fresh process: parse ``tfface --help`` (no tensor made), then report the active allocator.
_PROBE = """
from tfface.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
from tfface.runtime import cpu_allocator_name
print(cpu_allocator_name())
"""


def _allocator_in_fresh_process(setting: str | None) -> str:
    env = {key: value for key, value in os.environ.items() if key != POOLED_CPU_ALLOCATOR}
    if setting is not None:
        env[POOLED_CPU_ALLOCATOR] = setting
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("setting", "expected"), [(None, "pooled"), ("false", "default")])
def test_command_uses_pooled_allocator_unless_told_not_to(setting, expected):
    assert _allocator_in_fresh_process(setting) == expected
