"""Process-wide TensorFlow settings for tfface's command and benchmarks, and what the CPU offers.

TensorFlow's default CPU allocator returns large buffers to the operating system when they are
freed, so every tensor of more than 32 MB (glibc's largest ``mmap`` threshold) is fresh memory
that page-faults on its first write. The sampled 3DMM basis and its gradient are such tensors
(8 x 10,000 samples x 3 x 153 modes: 147 MB). TensorFlow's pooling (BFC) CPU allocator keeps
them. Measured on a 2-core AVX2 machine, in alternating processes: writing a basis-sized
product 3.7 times faster, a small-config training step 1.2-1.3 times faster, forward+backward of
the geometric solve 1.1-1.5 and of the photometric solve 1.2-1.8 times faster
(``tools/bench_least_squares.py``; ``TF_CPU_ALLOCATOR_USE_BFC=false`` selects the default
allocator).

The setting is the environment variable :data:`POOLED_CPU_ALLOCATOR`, read once, at TensorFlow's
first CPU allocation (importing TensorFlow allocates nothing): call
:func:`use_pooled_cpu_allocator` before any tensor is made. The ``tfface`` command and the
benchmarks do; a program that uses :mod:`tfface` as a library decides for itself.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

#: TensorFlow's switch to its BFC (pooling) CPU allocator.
POOLED_CPU_ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"

#: Values TensorFlow reads as true and as false in a boolean environment variable, compared in
#: lower case (``ReadBoolFromEnvVar`` in tensorflow/core/util/env_var.cc); any other value is
#: rejected with a logged error and the default applies (for the allocator: not pooled).
TF_TRUE_VALUES = frozenset({"1", "true"})
TF_FALSE_VALUES = frozenset({"0", "false"})

#: Per ``/proc/cpuinfo`` key, the flags of native bfloat16 arithmetic: x86 lists AVX512-BF16 and
#: AMX-BF16 under ``flags``, 64-bit Arm lists FEAT_BF16 under ``Features``.
BFLOAT16_CPU_FLAGS: Mapping[str, frozenset[str]] = {
    "flags": frozenset({"avx512_bf16", "amx_bf16"}),
    "Features": frozenset({"bf16"}),
}

#: Where Linux describes the CPU.
CPUINFO_PATH = Path("/proc/cpuinfo")


def use_pooled_cpu_allocator() -> None:
    """Select TensorFlow's pooling CPU allocator unless the environment already chooses.

    Has no effect once TensorFlow has allocated a tensor in this process.
    """
    os.environ.setdefault(POOLED_CPU_ALLOCATOR, "true")


def tf_bool_env(value: str | None, default: bool) -> bool:
    """An environment variable's value as TensorFlow's C++ runtime reads a boolean.

    Args:
        value: the variable's value, ``None`` when unset.
        default: what TensorFlow uses when the variable is unset or not a boolean.
    """
    if value is None:
        return default
    if value.lower() in TF_TRUE_VALUES:
        return True
    if value.lower() in TF_FALSE_VALUES:
        return False
    return default


def cpu_allocator_name(environ: Mapping[str, str] | None = None) -> str:
    """``"pooled"`` or ``"default"``: the TensorFlow CPU allocator the environment selects.

    Decided by :data:`POOLED_CPU_ALLOCATOR` as TensorFlow parses it (unset or unparsable: the
    default allocator), so it is right whatever the CPU and build. It names this process's
    allocator when the variable has not changed since TensorFlow's first CPU allocation.

    Args:
        environ: the environment (default: this process's).
    """
    environ = os.environ if environ is None else environ
    return "pooled" if tf_bool_env(environ.get(POOLED_CPU_ALLOCATOR), default=False) else "default"


def native_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bfloat16 natively (see :data:`BFLOAT16_CPU_FLAGS`).

    Without it TensorFlow emulates bfloat16 and a mixed-bfloat16 U-Net is slow: on a 2-core AVX2
    machine a small-config training step took 2.0-2.3 s against 0.38-0.49 s in float32
    (``tools/bench_train_step.py``); on an AVX-512 machine mixed bfloat16 was 11-12% faster.

    Args:
        cpuinfo: text in the format of Linux's ``/proc/cpuinfo``, one block per logical CPU
            (default: this machine's, read once; empty, so ``False``, where it cannot be read,
            as on macOS and Windows). Every block's flag line must list a bfloat16 flag.
    """
    cpuinfo = system_cpuinfo() if cpuinfo is None else cpuinfo
    flag_lines = [(key.strip(), set(value.split()))
                  for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())
                  if key.strip() in BFLOAT16_CPU_FLAGS]
    return bool(flag_lines) and all(BFLOAT16_CPU_FLAGS[key] & flags for key, flags in flag_lines)


def read_cpuinfo(path: Path = CPUINFO_PATH) -> str:
    """The text of ``path``; empty where it does not exist or cannot be read."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@functools.cache
def system_cpuinfo() -> str:
    """This machine's ``/proc/cpuinfo`` (read once per process; empty where there is none)."""
    return read_cpuinfo()
