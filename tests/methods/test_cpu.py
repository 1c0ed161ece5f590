"""The CPU facts that decide precision (methods/cpu.py) and what `amp: auto` makes of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from methods import cpu

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _cpuinfo(tmp_path, flags: str):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return info


def test_flags_and_model_are_read_from_cpuinfo(tmp_path):
    info = _cpuinfo(tmp_path, "fpu sse avx2 avx512f avx512_bf16 avx512_vnni")
    assert {"avx512_bf16", "avx2"} <= cpu.cpuinfo_flags(info)
    assert cpu.cpuinfo_flags(tmp_path / "missing") == set()
    assert cpu.cpu_model(info) == "Test CPU 9000"


def test_facts_name_the_precision_flags_and_a_forced_cap(tmp_path, monkeypatch):
    for key in cpu.ISA_ENV:
        monkeypatch.delenv(key, raising=False)
    facts = cpu.cpu_facts(_cpuinfo(tmp_path, "fpu avx2 avx512f avx512_bf16 avx512_vnni"))
    assert facts["flags"] == "avx512f avx512_bf16 avx512_vnni"  # in PRECISION_FLAGS' order, avx2 not listed
    assert (facts["bf16"], facts["forced"]) == ("native", "none")
    assert cpu.cpu_facts(_cpuinfo(tmp_path, "fpu avx2 fma"))["flags"] == "none"
    assert cpu.cpu_facts(_cpuinfo(tmp_path, "fpu avx2 fma"))["bf16"] == "none"
    for key, value in AVX2_ENV.items():
        monkeypatch.setenv(key, value)
    capped = cpu.cpu_facts(_cpuinfo(tmp_path, "fpu avx2 avx512f avx512_bf16"))
    assert capped["bf16"] == "none"  # the hardware has it, but torch was told not to use it
    assert capped["forced"] == "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"
    assert cpu.cpu_summary(capped).endswith("; forced ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2")


def test_an_avx2_cap_gives_fp32_for_amp_auto():
    """Under the AVX2 cap (what an AVX2-only CPU runs) ATen dispatches AVX2 and `amp: auto` resolves to fp32, on any
    x86 machine; the facts say so."""
    code = (
        "import json, torch; from methods import cpu; from methods.precision import Precision, cpu_bf16_supported; "
        "p = Precision.resolve('auto', 'auto', torch.device('cpu')); "
        "print(json.dumps({'label': p.label, 'native': cpu_bf16_supported(), **cpu.cpu_facts()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **AVX2_ENV}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["label"], out["native"], out["bf16"]) == ("fp32", False, "none")
    assert out["isa"] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without even AVX2
