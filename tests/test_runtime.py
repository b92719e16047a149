"""CPU allocator and CPU features, right on every CPU kind TensorFlow's CPU wheel runs on.

The allocator's name is checked against what the setting controls: TensorFlow's pooling (BFC)
allocator, and only it, enforces ``TF_CPU_BFC_MEM_LIMIT_IN_MB``, so in a fresh process a tensor
larger than that limit fails to allocate exactly when the allocator is the pooled one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tfface import runtime
from tfface.runtime import POOLED_CPU_ALLOCATOR, cpu_allocator_name, native_bfloat16, tf_bool_env

#: A fresh process as the ``tfface`` command starts (parse ``tfface --help``: no tensor made), then
#: the reported allocator name and whether a 64 MB tensor exceeds the pooled allocator's 16 MB cap.
_PROBE = """
import tensorflow as tf
from tfface.cli import main
from tfface.runtime import cpu_allocator_name
try:
    main(["--help"])
except SystemExit:
    pass
try:
    tf.ones([16 * 1024 * 1024]).numpy()
    capped = False
except tf.errors.ResourceExhaustedError:
    capped = True
print(cpu_allocator_name(), capped)
"""


#: Allocator settings of the probes and the allocator each selects for the ``tfface`` command.
_SETTINGS = {
    None: "pooled",  # the command's choice
    "false": "default",  # the user's choice wins
    "TRUE": "pooled",  # TensorFlow ignores case
    "yes": "default",  # TensorFlow rejects it and keeps its default
}


def _start_probe(setting: str | None) -> subprocess.Popen:
    """Run :data:`_PROBE` in a fresh process with ``TF_CPU_ALLOCATOR_USE_BFC`` unset or ``setting``."""
    env = {key: value for key, value in os.environ.items() if key != POOLED_CPU_ALLOCATOR}
    env.update({"TF_CPU_BFC_MEM_LIMIT_IN_MB": "16", "TF_CPP_MIN_LOG_LEVEL": "3"})
    if setting is not None:
        env[POOLED_CPU_ALLOCATOR] = setting
    return subprocess.Popen([sys.executable, "-c", _PROBE], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _probe_result(probe: subprocess.Popen) -> tuple[str, bool]:
    """``(reported name, whether the 16 MB pooled-allocator cap refused a 64 MB tensor)``."""
    out, err = probe.communicate(timeout=120)
    assert probe.returncode == 0, err[-2000:]
    name, capped = out.split()[-2:]
    return name, capped == "True"


@pytest.mark.slow
def test_command_uses_pooled_allocator_unless_told_not_to():
    # concurrently: the pooled allocator retries a refused allocation for 10 s before it fails
    probes = {setting: _start_probe(setting) for setting in _SETTINGS}
    for setting, expected in _SETTINGS.items():
        name, capped = _probe_result(probes[setting])
        assert (setting, name) == (setting, expected)
        assert capped is (expected == "pooled"), f"{setting}: the reported allocator is not the one TensorFlow uses"


@pytest.mark.parametrize(("value", "parsed"), [
    (None, None), ("", None), ("0", False), ("false", False), ("False", False), ("FALSE", False),
    ("1", True), ("true", True), ("True", True), ("TRUE", True), ("yes", None), ("on", None), (" true", None),
])
def test_allocator_setting_is_parsed_as_tensorflow_parses_it(value, parsed):
    """``parsed`` None: unset or not a boolean to TensorFlow, which then keeps its default."""
    for default in (False, True):
        assert tf_bool_env(value, default) is (default if parsed is None else parsed)
    environ = {} if value is None else {POOLED_CPU_ALLOCATOR: value}
    assert cpu_allocator_name(environ) == ("pooled" if parsed else "default")


def test_user_setting_wins_over_the_command_default(monkeypatch):
    monkeypatch.setenv(POOLED_CPU_ALLOCATOR, "false")
    runtime.use_pooled_cpu_allocator()
    assert cpu_allocator_name() == "default"
    monkeypatch.delenv(POOLED_CPU_ALLOCATOR)
    runtime.use_pooled_cpu_allocator()
    assert cpu_allocator_name() == "pooled"


def _x86(*extra: str) -> str:
    base = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht"
    return f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Some CPU\nflags\t\t: {base} {' '.join(extra)}\n"


_AVX2 = ("ssse3", "fma", "sse4_1", "sse4_2", "avx", "f16c", "avx2", "bmi2")
_AVX512 = (*_AVX2, "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512_vnni")
_ARM_NEOVERSE_N1 = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop"
                    " asimddp ssbs")
_ARM_NEOVERSE_V1 = (_ARM_NEOVERSE_N1 + " sve sha3 sm3 sm4 asimdfhm dit uscat ilrcpc flagm sb paca pacg dcpodp"
                    " svei8mm svebf16 i8mm bf16 dgh rng")


def _arm(features: str, processors: int = 2) -> str:
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 2100.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                   f"CPU architecture: 8\n\n" for i in range(processors))


@pytest.mark.parametrize(("cpuinfo", "native"), [
    (_x86(*_AVX2), False),
    (_x86(*_AVX512), False),  # AVX-512 without BF16 (e.g. Skylake-SP, Cascade Lake, Zen 3)
    (_x86(*_AVX512, "avx512_bf16"), True),  # Cooper Lake, Zen 4
    (_x86(*_AVX512, "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"), True),  # Sapphire Rapids
    (_x86(*_AVX2, "amx_bf16", "amx_tile"), True),
    (_x86(*_AVX512, "avx512_bf16") + "\n" + _x86(*_AVX512), False),  # every CPU must have it
    (_x86(*_AVX2, "bf16"), False),  # an Arm feature name on x86 is not an x86 flag
    (_arm(_ARM_NEOVERSE_N1), False),  # Graviton 2, Ampere Altra
    (_arm(_ARM_NEOVERSE_V1), True),  # Graviton 3
    (_arm(_ARM_NEOVERSE_N1 + " svebf16"), False),  # SVE-BF16 alone names no FEAT_BF16
    (_arm(_ARM_NEOVERSE_N1 + " avx512_bf16"), False),  # an x86 flag name on Arm is not an Arm feature
    ("model name\t: bf16 in a name is no flag\n", False),
    ("", False),  # no /proc/cpuinfo (macOS, Windows)
])
def test_native_bfloat16_on_every_cpu_kind(cpuinfo, native):
    assert native_bfloat16(cpuinfo) is native


def test_unreadable_cpuinfo_reads_as_empty(tmp_path):
    assert runtime.read_cpuinfo(tmp_path / "no-such-cpuinfo") == ""
    assert runtime.read_cpuinfo(tmp_path) == ""  # a folder: unreadable as text
    assert native_bfloat16(runtime.read_cpuinfo(tmp_path / "no-such-cpuinfo")) is False


def test_this_machine_is_read_from_proc_cpuinfo():
    assert native_bfloat16() is native_bfloat16(runtime.read_cpuinfo())
