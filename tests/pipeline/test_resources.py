"""Device choice and TF32 (pipeline/resources.py)."""

from __future__ import annotations

import pytest
import torch

from methods.errors import NstError
from pipeline.config import load_params
from pipeline.resources import pick_device, tf32_label


def test_the_precision_label_names_tf32_only_on_cuda():
    assert tf32_label(torch.device("cpu"), True) == ""
    assert tf32_label(torch.device("cuda"), False) == " (TF32 off)"
    assert tf32_label(torch.device("cuda", 1), True) == " (TF32 on)"


def test_tf32_is_a_parameter_off_by_default_in_every_profile(repo_root):
    for profile in ("sample", "full", "rehearsal"):
        assert load_params(repo_root / "params.yaml", profile).base.tf32 is False, profile


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_an_error_and_auto_is_the_cpu():
    with pytest.raises(NstError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto", tf32=True).type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("tf32", [True, False])
def test_pick_device_sets_tf32_on_cuda_as_asked(tf32):
    assert pick_device("cuda", tf32).type == "cuda"
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert torch.backends.cudnn.allow_tf32 is tf32
