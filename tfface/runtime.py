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

The setting is read once, at TensorFlow's first CPU allocation (importing TensorFlow allocates
nothing): call :func:`use_pooled_cpu_allocator` before any tensor is made. The ``tfface``
command and the benchmarks do; a program that uses :mod:`tfface` as a library decides for
itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

#: TensorFlow's switch to its BFC (pooling) CPU allocator.
POOLED_CPU_ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"

#: ``/proc/cpuinfo`` flags of native bfloat16 arithmetic: x86 AVX512-BF16 and AMX-BF16, Arm BF16.
BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def use_pooled_cpu_allocator() -> None:
    """Select TensorFlow's pooling CPU allocator unless the environment already chooses.

    Has no effect once TensorFlow has allocated a tensor in this process.
    """
    os.environ.setdefault(POOLED_CPU_ALLOCATOR, "true")


def cpu_allocator_name() -> str:
    """``"pooled"`` or ``"default"``: this process's TensorFlow CPU allocator.

    Only the pooling allocator keeps statistics; asking for them creates the allocator, so
    call this after :func:`use_pooled_cpu_allocator`.
    """
    import tensorflow as tf  # here: the rest of this module is read before TensorFlow is needed

    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:
        return "default"
    return "pooled"


def native_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bfloat16 natively (one of :data:`BFLOAT16_CPU_FLAGS`).

    Without it TensorFlow emulates bfloat16 and a mixed-bfloat16 U-Net is slow: on a 2-core AVX2
    machine a small-config training step took 2.0-2.3 s against 0.38-0.49 s in float32
    (``tools/bench_train_step.py``); on an AVX-512 machine mixed bfloat16 was 11-12% faster.

    Parameters
    ----------
    cpuinfo : str, optional
        Text in the format of Linux's ``/proc/cpuinfo`` (default: this machine's, read once;
        empty, so ``False``, where it does not exist).
    """
    cpuinfo = _system_cpuinfo() if cpuinfo is None else cpuinfo
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and BFLOAT16_CPU_FLAGS & set(value.split()):
            return True
    return False


@functools.cache
def _system_cpuinfo() -> str:
    source = Path("/proc/cpuinfo")
    return source.read_text(errors="replace") if source.is_file() else ""
