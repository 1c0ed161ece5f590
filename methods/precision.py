"""Mixed precision and memory format, one place for every method: bf16 autocast and channels_last on CUDA and on
CPUs with native bf16 instructions.

Settings (``amp`` / ``channels_last`` in params.yaml, :class:`Precision` here):

- ``amp``: ``"auto"`` = bf16 autocast where the hardware runs it natively (a CUDA device with bf16, a CPU with
  AVX512-BF16 or AMX-BF16), float32 elsewhere; ``True`` = bf16 autocast on any device (on a CPU without native bf16
  oneDNN emulates it, slowly: for tests); ``False`` = float32.
- ``channels_last``: ``"auto"`` = channels_last exactly when bf16 autocast is on (oneDNN's and cuDNN's bf16
  convolutions want NHWC); ``True`` / ``False`` = always / never.

Losses stay float32: callers cast features with ``.float()`` before any loss (and InfoNCE computes its logits in
float32). Same seed + same device + same setting -> same numbers (bf16 kernels are deterministic on the CPU).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import platform
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import torch

from methods.cpu import NATIVE_BF16_FLAGS, cpuinfo_flags
from methods.errors import NstError

Setting = bool | Literal["auto"]


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively and torch's oneDNN can use it (Linux flags; elsewhere: False).

    oneDNN's ``_is_mkldnn_bf16_supported`` alone is also true on plain AVX512 CPUs, where bf16 is emulated and slower
    than float32; it is false under ``ONEDNN_MAX_CPU_ISA=AVX2`` (what an AVX2-only CPU runs), so that cap gives fp32."""
    if platform.system() != "Linux" or not torch.backends.mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is not None and not check():
        return False
    return bool(cpuinfo_flags() & set(NATIVE_BF16_FLAGS))


def device_bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is native (fast) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_bf16_supported()
    return False


def _check(name: str, value: Any) -> None:
    if value not in (True, False, "auto") or not isinstance(value, bool | str):
        raise NstError(f"{name} must be true, false or 'auto', got {value!r}")


@dataclass(frozen=True)
class Precision:
    """The resolved precision for one device: ``bf16`` autocast and the ``channels_last`` memory format."""

    bf16: bool
    channels_last: bool
    device_type: str

    @classmethod
    def resolve(cls, amp: Setting, channels_last: Setting, device: torch.device) -> Precision:
        """``amp`` / ``channels_last`` settings (see the module docstring) for ``device``."""
        _check("amp", amp)
        _check("channels_last", channels_last)
        if device.type not in ("cpu", "cuda"):
            return cls(False, False, device.type)
        bf16 = device_bf16_supported(device) if amp == "auto" else bool(amp)
        nhwc = bf16 if channels_last == "auto" else bool(channels_last)
        return cls(bf16, nhwc, device.type)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for this device, or a no-op."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in this precision's memory format (values unchanged)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` converted in place to this precision's memory format (a no-op for float32 NCHW)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def module_on(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``module`` on ``device`` in this precision's memory format (NCHW-contiguous without channels_last), leaving
        ``module`` itself unchanged: it is returned as it is when it already fits, else a converted copy, made once per
        module, device and format and reused (a stylize call per pair would otherwise copy, and on CUDA upload, the
        whole encoder each time). For the shared frozen encoder, whose weights never change, which other methods (and
        other calls) use as it was passed in."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if all(_fits(t, device, fmt) for t in (*module.parameters(), *module.buffers())):
            return module
        copies = _CONVERTED.setdefault(module, {})
        key = (str(device), str(fmt))
        if key not in copies:
            copies[key] = copy.deepcopy(module).to(device).to(memory_format=fmt)
        return copies[key]

    @property
    def label(self) -> str:
        return ("bf16" if self.bf16 else "fp32") + ("+channels_last" if self.channels_last else "")


# frozen module -> (device, memory format) -> its converted copy (Precision.module_on); gone with the module
_CONVERTED: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[str, str], torch.nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def _fits(t: torch.Tensor, device: torch.device, fmt: torch.memory_format) -> bool:
    same_device = t.device.type == device.type and (device.index is None or t.device.index == device.index)
    return same_device and (t.ndim != 4 or t.is_contiguous(memory_format=fmt))


def runtime_label(method: Any, device: torch.device) -> str:
    """What ``method`` computes in on ``device``, for timing.csv, MLflow and the report: a method's own ``runtime``
    (one that runs on a runtime of its own, e.g. ghiasi's onnxruntime provider), else the precision its ``amp`` /
    ``channels_last`` resolve to (:meth:`Precision.resolve`), else ``fp32``."""
    own = getattr(method, "runtime", None)
    if own:
        return str(own)
    p = getattr(method, "params", None)
    if p is not None and hasattr(p, "amp") and hasattr(p, "channels_last"):
        return Precision.resolve(p.amp, p.channels_last, device).label
    return "fp32"
