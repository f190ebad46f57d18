"""The hand-written formulas of docs/protocol.md hold: re-derived from the text, they equal the reference bit for bit.

``protocol_emulation`` follows §8.2.6, §8.2.7 and §8.7 with numpy alone; these
tests compare it with ``build_model`` and with ``torch.optim``. The document
describes the AVX2 kernels (the reference nodes') and the DEFAULT ones; on
another CPU capability the comparisons that depend on it are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import protocol_emulation as emu
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CAPABILITY = torch.backends.cpu.get_cpu_capability()
needs_known_kernels = pytest.mark.skipif(
    CAPABILITY not in ("DEFAULT", "AVX2"), reason=f"the document describes the DEFAULT and AVX2 kernels, not {CAPABILITY}"
)
FUSED = CAPABILITY != "DEFAULT"
SEEDS = (0, 7, 2**32 + 7, 12345678901)


@needs_known_kernels
@pytest.mark.parametrize("seed", SEEDS)
def test_mlp_and_cnn_initialisation_follows_the_document(seed: int) -> None:
    cases = [
        ("mlp", {"in_dim": 64, "hidden": 128, "layers": 2, "classes": 10}, emu.init_mlp),
        ("mlp", {"in_dim": 5, "hidden": 7, "layers": 0, "classes": 3}, emu.init_mlp),
        ("cnn", {"side": 8, "channels": 16, "classes": 10}, emu.init_cnn),
        ("cnn", {"side": 7, "channels": 3, "classes": 4}, emu.init_cnn),
    ]
    bad = [m for name, args, init in cases for m in emu.mismatches(name, args, seed, init(seed, **args, fused=FUSED))]
    assert bad == []


def test_only_the_low_32_bits_of_the_seed_initialise() -> None:
    from tdml_node.work.models import build_model, make_model_spec

    spec = make_model_spec("mlp", in_dim=4, hidden=3, layers=1, classes=2)
    a = build_model(spec, seed=5, dtype=torch.float32).state_dict()
    b = build_model(spec, seed=2**32 + 5, dtype=torch.float32).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(emu.LIBM is None or not sys.platform.startswith("linux"), reason="needs the GNU C library's libm")
def test_transformer_initialisation_follows_the_document_on_the_default_kernel() -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "PYTHONPATH": str(ROOT)}
    script = Path(emu.__file__)
    done = subprocess.run(
        [sys.executable, str(script), str(2**32 + 7)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"mismatches": []}


def _tensors(seed: int, n: int = 8 * 300 + 5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(n, generator=g) - 0.5 for _ in range(3))


@needs_known_kernels
@pytest.mark.parametrize(
    ("momentum", "weight_decay", "nesterov", "has_buffer"),
    [(0.9, 0.0, False, True), (0.9, 0.0, True, True), (0.9, 0.01, True, True), (0.9, 0.01, False, False), (0.0, 0.01, False, False)],
)
def test_sgd_step_follows_the_document(momentum: float, weight_decay: float, nesterov: bool, has_buffer: bool) -> None:
    theta, grad, buf = _tensors(1)
    p = torch.nn.Parameter(theta.clone())
    opt = torch.optim.SGD([p], lr=0.7, momentum=momentum, dampening=0.0, weight_decay=weight_decay, nesterov=nesterov, foreach=False)
    if has_buffer:
        opt.state[p]["momentum_buffer"] = buf.clone()
    p.grad = grad.clone()
    opt.step()
    want, want_buf = emu.sgd_step(
        theta.numpy(), grad.numpy(), buf.numpy() if has_buffer else None,
        lr=0.7, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, fused=FUSED,
    )
    assert np.array_equal(p.detach().numpy().view(np.uint32), want.view(np.uint32))
    if momentum:
        assert want_buf is not None
        assert np.array_equal(opt.state[p]["momentum_buffer"].numpy().view(np.uint32), want_buf.view(np.uint32))


@needs_known_kernels
@pytest.mark.parametrize("start_step", [0, 2, 40])
def test_adamw_step_follows_the_document(start_step: int) -> None:
    theta, grad, m0 = _tensors(2)
    m0 = m0 * 0.1 if start_step else torch.zeros_like(theta)
    v0 = (torch.rand(theta.shape[0], generator=torch.Generator().manual_seed(3)) * 0.01) if start_step else torch.zeros_like(theta)
    p = torch.nn.Parameter(theta.clone())
    opt = torch.optim.AdamW([p], lr=0.003, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False, fused=False)
    if start_step:
        opt.state[p].update(step=torch.tensor(float(start_step)), exp_avg=m0.clone(), exp_avg_sq=v0.clone())
    p.grad = grad.clone()
    opt.step()
    want, m, v, s = emu.adamw_step(
        theta.numpy(), grad.numpy(), m0.numpy(), v0.numpy(), float(start_step),
        lr=0.003, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, fused=FUSED,
        sqrt=lambda x: torch.from_numpy(np.ascontiguousarray(x)).sqrt().numpy(),
    )
    state = opt.state[p]
    assert state["step"].dtype == torch.float32 and float(state["step"]) == s
    assert np.array_equal(state["exp_avg"].numpy().view(np.uint32), m.view(np.uint32))
    assert np.array_equal(state["exp_avg_sq"].numpy().view(np.uint32), v.view(np.uint32))
    assert np.array_equal(p.detach().numpy().view(np.uint32), want.view(np.uint32))


def test_float32_sqrt_is_the_librarys_not_the_correctly_rounded_one() -> None:
    """§8.7 says torch's float32 sqrt is not correctly rounded on the reference build; if that changes, so must the text."""
    x = torch.rand(4096, generator=torch.Generator().manual_seed(3))
    exact = np.sqrt(x.numpy().astype(np.float64)).astype(np.float32)
    if CAPABILITY not in ("DEFAULT", "AVX2"):
        pytest.skip(f"not the reference kernels ({CAPABILITY})")
    assert not np.array_equal(x.sqrt().numpy(), exact)
