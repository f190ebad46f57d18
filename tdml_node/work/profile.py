"""The execution profile: the one place where torch's determinism settings are applied.

A job's ``ExecutionProfile`` pins everything that changes the bits of a
result (dtype, intra-op thread count, deterministic algorithms, device class,
torch version). ``apply_profile`` puts the process into that state before any
work; nothing else in the executor touches these settings.

This module must never let a profile run that this process cannot honour
(another torch version, CUDA without a GPU): a silently different setting
would make an honest node compute different bits and be slashed for it.
Nor may the CUDA settings ever break the CPU path: they are plain flags that
a CPU-only build accepts.
"""

from __future__ import annotations

import os

import torch

from consensus.types import ExecutionProfile
from consensus.work import InvalidWork, WorkUnavailable

# cuBLAS reads this once, when CUDA is first initialised, so it is set at
# import as well as in apply_profile; an operator's own value is kept.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

TORCH_VERSION = str(torch.__version__)
"""This process's torch version as plain text (``torch.__version__`` is a str subclass the codec refuses)."""

PROFILE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
PROFILE_DEVICES = ("cpu", "cuda")


class ProfileUnavailable(WorkUnavailable):
    """This process cannot run the profile (other torch version, no GPU).

    A ``WorkUnavailable``: the work is well formed, only this node cannot do
    it, so it must neither be judged invalid nor computed under other settings.
    """


def torch_dtype(profile: ExecutionProfile) -> torch.dtype:
    """The floating-point dtype of the profile's models and data."""
    try:
        return PROFILE_DTYPES[profile.dtype]
    except KeyError:
        raise InvalidWork(f"profile dtype must be one of {sorted(PROFILE_DTYPES)}, got {profile.dtype!r}") from None


def local_profile(dtype: str = "float32", threads: int = 1, device: str = "cpu") -> ExecutionProfile:
    """A deterministic profile for this process's torch version."""
    return ExecutionProfile(
        dtype=dtype, threads=threads, deterministic=True, device=device, torch_version=TORCH_VERSION
    )


def can_run(profile: ExecutionProfile) -> bool:
    """Whether this process can compute bit-exactly what the profile prescribes."""
    if profile.torch_version != TORCH_VERSION or profile.dtype not in PROFILE_DTYPES:
        return False
    if profile.device == "cpu":
        return True
    return profile.device == "cuda" and torch.cuda.is_available()


def apply_profile(profile: ExecutionProfile) -> torch.device:
    """Put torch into the profile's deterministic state; the device to compute on.

    Raises ``InvalidWork`` for a profile no node could run (unknown dtype or
    device) and ``ProfileUnavailable`` for one this process cannot.
    """
    torch_dtype(profile)
    if profile.device not in PROFILE_DEVICES:
        raise InvalidWork(f"profile device must be one of {PROFILE_DEVICES}, got {profile.device!r}")
    if profile.torch_version != TORCH_VERSION:
        raise ProfileUnavailable(f"profile needs torch {profile.torch_version}, this node has {TORCH_VERSION}")
    if profile.device == "cuda" and not torch.cuda.is_available():
        raise ProfileUnavailable("profile needs a CUDA device and none is available")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # The intra-op thread count decides how CPU reductions are split, hence
    # the bits; the call is skipped when already set since it can rebuild the pool.
    if torch.get_num_threads() != profile.threads:
        torch.set_num_threads(profile.threads)
    torch.use_deterministic_algorithms(profile.deterministic)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch.device(profile.device)


def receipt_for(profile: ExecutionProfile, device: torch.device) -> ExecutionProfile:
    """The profile a unit actually ran under, to be signed as its receipt."""
    return ExecutionProfile(
        dtype=profile.dtype,
        threads=torch.get_num_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        device=device.type,
        torch_version=TORCH_VERSION,
    )
