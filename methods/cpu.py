"""The CPU facts that decide a run's precision and numbers, without importing torch (the fetch stage reads them too).

Which precision ``amp: auto`` picks on a CPU, and which kernels compute a float32 result, depend on the instruction
set: native bf16 arithmetic (AVX512-BF16, AMX-BF16) makes bf16 autocast fast, and ATen / oneDNN pick their kernels
(AVX512 or AVX2; VNNI for int8) from the CPU. Two machines of the same CPU family give the same bytes; across families
float32 sums are ordered differently (see README, "Reproducibility across CPUs"). ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2`` make a newer CPU run the AVX2 kernels (what an AVX2-only CPU runs); they are recorded
whenever set.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# /proc/cpuinfo flags that change what runs: native bf16 (AVX512-BF16: Cooper Lake, Zen 4 and later; AMX-BF16:
# Sapphire Rapids and later), the VNNI int8 dot products (onnxruntime's and oneDNN's int8 kernels), AVX512 itself.
PRECISION_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The environment variables that cap the instruction set torch uses (ATen's dispatch and oneDNN's JIT).
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def _cpuinfo(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first processor's ``flags`` from ``/proc/cpuinfo`` (an empty set where there is none)."""
    for line in _cpuinfo(path).splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_model(path: Path = Path("/proc/cpuinfo")) -> str:
    """``model name`` from ``/proc/cpuinfo``, else :func:`platform.processor`, else the machine type."""
    for line in _cpuinfo(path).splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown"


def forced_isa() -> dict[str, str]:
    """The set ones of :data:`ISA_ENV`, e.g. ``{"ATEN_CPU_CAPABILITY": "avx2", ...}``."""
    return {k: os.environ[k] for k in ISA_ENV if os.environ.get(k)}


def aten_capability() -> str | None:
    """The instruction set ATen dispatches to (``AVX512``, ``AVX2``, ...) when torch is already imported, else None
    (this module never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def cpu_facts(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """What decides precision and kernels on this CPU, as strings (MLflow tags, timing.csv, the report):

    ``model``; ``flags``: the present ones of :data:`PRECISION_FLAGS` (space-separated, ``none`` if none);
    ``bf16``: ``native`` when a :data:`NATIVE_BF16_FLAGS` flag is present and no AVX2 cap is forced, else ``none``;
    ``isa``: ATen's capability (``unknown`` before torch is imported); ``forced``: the set :data:`ISA_ENV` variables
    (``KEY=value`` joined by spaces, ``none`` when unset)."""
    flags = cpuinfo_flags(path)
    present = [f for f in PRECISION_FLAGS if f in flags]
    forced = forced_isa()
    capped = any("avx2" in v.lower() or "sse" in v.lower() for v in forced.values())
    native = bool(flags & set(NATIVE_BF16_FLAGS)) and not capped
    return {
        "model": cpu_model(path),
        "flags": " ".join(present) or "none",
        "bf16": "native" if native else "none",
        "isa": aten_capability() or "unknown",
        "forced": " ".join(f"{k}={v}" for k, v in forced.items()) or "none",
    }


def cpu_summary(facts: dict[str, str] | None = None) -> str:
    """One line of :func:`cpu_facts`, e.g. ``AMD EPYC; ATen AVX512; flags avx512f avx512_bf16; bf16 native``."""
    f = facts or cpu_facts()
    text = f"{f['model']}; ATen {f['isa']}; flags {f['flags']}; bf16 {f['bf16']}"
    return text + (f"; forced {f['forced']}" if f.get("forced", "none") != "none" else "")
