"""ghiasi records the onnxruntime execution provider that actually ran it (issue 25): on a GPU machine with plain
``onnxruntime`` the stage's device is ``cuda`` but the networks run on the CPU provider, and timing.csv must say so."""

from __future__ import annotations

import onnxruntime
import pytest
import torch

from methods.ghiasi import Ghiasi
from methods.precision import runtime_label


@pytest.fixture
def sessions(monkeypatch):
    """Every onnxruntime session the package creates, spied on: the providers each one reports it runs with."""
    made: list[list[str]] = []
    real = onnxruntime.InferenceSession

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.get_providers())

    monkeypatch.setattr(onnxruntime, "InferenceSession", Spy)
    return made


def test_provider_is_the_one_its_sessions_report(sessions):
    method = Ghiasi()
    assert len(sessions) == 2  # the style predictor and the transform network, loaded at construction
    assert {s[0] for s in sessions} == {method.provider}
    assert method.provider in onnxruntime.get_available_providers()
    assert method.runtime == f"onnxruntime {method.provider}"


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="this onnxruntime has the CUDA provider"
)
def test_plain_onnxruntime_is_recorded_as_the_cpu_whatever_the_stage_device(sessions):
    """The stylize stage on a CUDA device (what the full profile runs) with CPU-only onnxruntime: the label is the CPU
    provider, not ``cuda``, before and after a stylization."""
    method = Ghiasi()
    assert (method.provider, method.device_label) == ("CPUExecutionProvider", "cpu")
    assert runtime_label(method, torch.device("cuda")) == "onnxruntime CPUExecutionProvider"
    method.stylize(torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 40))
    assert (method.provider, method.device_label) == ("CPUExecutionProvider", "cpu")
    assert {s[0] for s in sessions} == {"CPUExecutionProvider"}
