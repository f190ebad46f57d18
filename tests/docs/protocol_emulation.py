"""The initialisation and optimizer steps of docs/protocol.md (§8.2.6, §8.2.7, §8.7), written from the text.

numpy and the C library only, no torch: each function follows the document's
description, so that comparing it bit for bit with the reference
(``tdml_node.work``) tests the document. ``fused`` selects the AVX2 kernels'
single-rounding multiply-adds; without it, the DEFAULT kernels' two roundings.
The transformer's normal draws of at least 16 elements are only described
for the DEFAULT kernel (the AVX2 one uses ``avx_mathfun.h``), so the
transformer is emulated for DEFAULT only.

Run as a script it prints the parameters that differ from ``build_model``
under the process's CPU capability, as JSON (used with
``ATEN_CPU_CAPABILITY=default`` by the tests).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

F32 = np.float32
F64 = np.float64

_libm_path = ctypes.util.find_library("m")
LIBM = ctypes.CDLL(_libm_path) if _libm_path else None
if LIBM is not None:
    for _name in ("logf", "cosf", "sinf", "sqrtf"):
        getattr(LIBM, _name).restype = ctypes.c_float
        getattr(LIBM, _name).argtypes = [ctypes.c_float]
    LIBM.fmaf.restype = ctypes.c_float
    LIBM.fmaf.argtypes = [ctypes.c_float] * 3


def f32(x: Any) -> Any:
    return np.asarray(x, dtype=F64).astype(F32)


def fma(a: Any, b: Any, c: Any, *, fused: bool) -> Any:
    """``a·b + c`` in float32: one rounding when ``fused`` (exact in double for these operands), else two."""
    if fused:
        return f32(F64(a) * F64(b) + F64(c))
    return f32(F64(f32(F64(a) * F64(b))) + F64(c))


# ---------------------------------------------------------------------------
# §8.2.7: PyTorch's CPU generator


class Generator:
    """MT19937 seeded with ``init_genrand(seed mod 2^32)``, with torch's cached normal sample."""

    def __init__(self, seed: int) -> None:
        self._mt = np.random.MT19937(0)
        self._mt._legacy_seeding(seed % 2**32)
        self.cached: float | None = None

    def next32(self, n: int) -> Any:
        return self._mt.random_raw(n).astype(np.uint64)

    def next64(self) -> int:
        hi, lo = (int(v) for v in self._mt.random_raw(2))
        return (hi << 32) | lo


def uniform_(g: Generator, n: int, lo: float, hi: float, *, fused: bool) -> Any:
    f, t = F32(lo), F32(hi)
    x = (g.next32(n) & np.uint64(0xFFFFFF)).astype(F32) * F32(2.0**-24)
    v = fma(x, F32(t - f), f, fused=fused)
    return np.where(v == t, f, v).astype(F32)


def _box_muller_16(u: Any, mean: float, std: float) -> Any:
    assert LIBM is not None
    out = u.copy()
    m, s = F32(mean), F32(std)
    for j in range(8):
        u1 = F32(F32(1) - u[j])
        u2 = u[j + 8]
        r = LIBM.sqrtf(float(F32(-2) * F32(LIBM.logf(float(u1)))))
        theta = float(F32(2.0 * math.pi * float(u2)))
        out[j] = LIBM.fmaf(float(F32(F32(r) * F32(LIBM.cosf(theta)))), float(s), float(m))
        out[j + 8] = LIBM.fmaf(float(F32(F32(r) * F32(LIBM.sinf(theta)))), float(s), float(m))
    return out


def normal_(g: Generator, n: int, mean: float, std: float) -> Any:
    """torch's ``normal_`` on a contiguous float32 tensor of n elements (DEFAULT kernel)."""
    if n < 16:
        out = []
        for _ in range(n):
            if g.cached is not None:
                z, g.cached = g.cached, None
            else:
                u1 = (g.next64() & (2**53 - 1)) * 2.0**-53
                u2 = (g.next64() & (2**53 - 1)) * 2.0**-53
                r = math.sqrt(-2.0 * math.log1p(-u2))
                theta = 2.0 * math.pi * u1
                z, g.cached = r * math.cos(theta), r * math.sin(theta)
            out.append(z * std + mean)
        return f32(out)
    data = uniform_(g, n, 0.0, 1.0, fused=False)
    for i in range(0, n - 15, 16):
        data[i : i + 16] = _box_muller_16(data[i : i + 16], mean, std)
    if n % 16:
        data[n - 16 :] = _box_muller_16(uniform_(g, 16, 0.0, 1.0, fused=False), mean, std)
    return data


# ---------------------------------------------------------------------------
# §8.2.6: the models' initialisation


def _linear(g: Generator, fan_in: int, out: int, *, bias: bool, fused: bool) -> tuple[Any, Any]:
    r = math.sqrt(5)
    a = math.sqrt(3.0) * (math.sqrt(2.0 / (1 + r**2)) / math.sqrt(fan_in))
    w = uniform_(g, out * fan_in, -a, a, fused=fused)
    b = uniform_(g, out, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), fused=fused) if bias else None
    return w, b


def init_mlp(seed: int, *, in_dim: int, hidden: int, layers: int, classes: int, fused: bool) -> dict[str, Any]:
    g = Generator(seed)
    dims = [in_dim] + [hidden] * layers + [classes]
    out: dict[str, Any] = {}
    for i in range(len(dims) - 1):
        out[f"net.{2 * i}.weight"], out[f"net.{2 * i}.bias"] = _linear(g, dims[i], dims[i + 1], bias=True, fused=fused)
    return out


def init_cnn(seed: int, *, side: int, channels: int, classes: int, fused: bool) -> dict[str, Any]:
    g = Generator(seed)
    out: dict[str, Any] = {}
    out["conv1.weight"], out["conv1.bias"] = _linear(g, 1 * 9, channels, bias=True, fused=fused)
    out["conv2.weight"], out["conv2.bias"] = _linear(g, channels * 9, channels, bias=True, fused=fused)
    out["head.weight"], out["head.bias"] = _linear(g, channels * (side // 2) ** 2, classes, bias=True, fused=fused)
    return out


def init_char_transformer(seed: int, *, vocab: int, ctx: int, d_model: int, n_layer: int, n_head: int) -> dict[str, Any]:
    """DEFAULT kernel only (see the module docstring)."""
    g = Generator(seed)
    d = d_model
    normal_(g, vocab * d, 0.0, 1.0)
    normal_(g, ctx * d, 0.0, 1.0)
    for _ in range(n_layer):
        for fan_in, width in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)):
            _linear(g, fan_in, width, bias=True, fused=False)
    _linear(g, d, vocab, bias=False, fused=False)
    ones, zeros = np.ones(d, F32), np.zeros(d, F32)
    out: dict[str, Any] = {"tok_emb.weight": normal_(g, vocab * d, 0.0, 0.02), "pos_emb.weight": normal_(g, ctx * d, 0.0, 0.02)}
    for i in range(n_layer):
        p = f"blocks.{i}."
        out[p + "ln1.weight"], out[p + "ln1.bias"] = ones, zeros
        out[p + "attn.qkv.weight"], out[p + "attn.qkv.bias"] = normal_(g, 3 * d * d, 0.0, 0.02), np.zeros(3 * d, F32)
        out[p + "attn.proj.weight"], out[p + "attn.proj.bias"] = normal_(g, d * d, 0.0, 0.02), zeros
        out[p + "ln2.weight"], out[p + "ln2.bias"] = ones, zeros
        out[p + "mlp.0.weight"], out[p + "mlp.0.bias"] = normal_(g, 4 * d * d, 0.0, 0.02), np.zeros(4 * d, F32)
        out[p + "mlp.2.weight"], out[p + "mlp.2.bias"] = normal_(g, 4 * d * d, 0.0, 0.02), zeros
    out["ln_f.weight"], out["ln_f.bias"] = ones, zeros
    out["head.weight"] = normal_(g, vocab * d, 0.0, 0.02)
    return out


# ---------------------------------------------------------------------------
# §8.7: one optimizer step, float32


def sgd_step(
    theta: Any, grad: Any, buf: Any | None, *, lr: float, momentum: float, weight_decay: float, nesterov: bool, fused: bool
) -> tuple[Any, Any | None]:
    g = fma(theta, F32(weight_decay), grad, fused=fused) if weight_decay != 0 else grad
    if momentum != 0:
        buf = g.copy() if buf is None else f32(F64(f32(F64(buf) * F64(F32(momentum)))) + F64(g))
        d = fma(buf, F32(momentum), g, fused=fused) if nesterov else buf
    else:
        d = g
    return fma(d, F32(-lr), theta, fused=fused), buf


def adamw_step(
    theta: Any,
    grad: Any,
    m: Any,
    v: Any,
    step: float,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    fused: bool,
    sqrt: Any,
) -> tuple[Any, Any, Any, float]:
    """``sqrt`` is the library's float32 square root (not correctly rounded, §8.7)."""
    s = step + 1.0
    if weight_decay != 0:
        theta = f32(F64(theta) * F64(F32(1 - lr * weight_decay)))
    w = F32(1 - beta1)
    diff = f32(F64(grad) - F64(m))
    m = fma(w, diff, m, fused=fused) if abs(w) < 0.5 else f32(F64(grad) - F64(f32(F64(diff) * F64(F32(1 - w)))))
    v = fma(f32(F64(F32(1 - beta2)) * F64(grad)), grad, f32(F64(v) * F64(F32(beta2))), fused=fused)
    c1 = 1 - beta1**s
    c2 = 1 - beta2**s
    alpha = lr / c1
    den = f32(F64(f32(F64(sqrt(v)) / F64(F32(c2**0.5)))) + F64(F32(eps)))
    theta = f32(F64(theta) + F64(f32(F64(f32(F64(F32(-alpha)) * F64(m))) / F64(den))))
    return theta, m, v, s


# ---------------------------------------------------------------------------
# Comparison with the reference


TRANSFORMERS: tuple[dict[str, int], ...] = (
    {"vocab": 65, "ctx": 64, "d_model": 64, "n_layer": 2, "n_head": 4},
    {"vocab": 37, "ctx": 9, "d_model": 12, "n_layer": 1, "n_head": 3},
    {"vocab": 3, "ctx": 5, "d_model": 2, "n_layer": 1, "n_head": 1},
)


def mismatches(name: str, args: dict[str, int], seed: int, emulated: dict[str, Any]) -> Iterator[str]:
    import torch

    from tdml_node.work.models import build_model, make_model_spec

    model = build_model(make_model_spec(name, **args), seed=seed, dtype=torch.float32)
    params = dict(model.named_parameters())
    if set(params) != set(emulated):
        yield f"{name}{args}: names {sorted(set(params) ^ set(emulated))}"
        return
    for pname, p in params.items():
        ours = np.ascontiguousarray(emulated[pname], dtype=F32).reshape(-1).view(np.uint32)
        theirs = p.detach().numpy().reshape(-1).view(np.uint32)
        if not np.array_equal(ours, theirs):
            yield f"{name}{args} seed {seed}: {pname}"


def main() -> int:
    import torch

    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        print(json.dumps({"error": "run with ATEN_CPU_CAPABILITY=default"}))
        return 2
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    bad = [m for args in TRANSFORMERS for m in mismatches("char_transformer", args, seed, init_char_transformer(seed, **args))]
    print(json.dumps({"mismatches": bad}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
