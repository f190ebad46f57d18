"""The execution profile: the settings it applies and the profiles it refuses."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from consensus import codec
from consensus.work import InvalidWork, WorkUnavailable
from tdml_node.work.profile import (
    ProfileUnavailable,
    apply_profile,
    can_run,
    local_profile,
    receipt_for,
    torch_dtype,
)


def test_local_profile_is_deterministic_and_this_torch() -> None:
    profile = local_profile()
    assert profile.deterministic
    assert profile.torch_version == torch.__version__
    assert type(profile.torch_version) is str  # the codec takes plain text only
    codec.encode(profile)
    assert (profile.dtype, profile.threads, profile.device) == ("float32", 1, "cpu")
    assert can_run(profile)


def test_apply_profile_sets_every_determinism_setting() -> None:
    device = apply_profile(local_profile(threads=2))
    assert device == torch.device("cpu")
    assert torch.get_num_threads() == 2
    device = apply_profile(local_profile(dtype="float64"))
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"]
    assert receipt_for(local_profile(dtype="float64"), device) == local_profile(dtype="float64")


def test_torch_dtype() -> None:
    assert torch_dtype(local_profile()) is torch.float32
    assert torch_dtype(local_profile(dtype="float64")) is torch.float64
    with pytest.raises(InvalidWork):
        torch_dtype(local_profile(dtype="int8"))


def test_other_torch_version_is_unavailable_not_invalid() -> None:
    other = dataclasses.replace(local_profile(), torch_version="1.0.0")
    assert not can_run(other)
    with pytest.raises(ProfileUnavailable):
        apply_profile(other)
    assert issubclass(ProfileUnavailable, WorkUnavailable)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_unavailable_and_cpu_still_works() -> None:
    cuda = local_profile(device="cuda")
    assert not can_run(cuda)
    with pytest.raises(ProfileUnavailable):
        apply_profile(cuda)
    assert apply_profile(local_profile()) == torch.device("cpu")


def test_unknown_device_is_invalid() -> None:
    with pytest.raises(InvalidWork):
        apply_profile(local_profile(device="tpu"))
    assert not can_run(local_profile(device="tpu"))
