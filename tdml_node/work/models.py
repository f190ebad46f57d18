"""The vetted model registry: the only models a job can name, built from integer arguments.

A job's ``ModelSpec`` is a registry name and named integers, never code.
``build_model`` seeds torch's CPU generator inside a forked RNG state and then
constructs the model, so the initial weights are a function of the spec and
the seed alone (for the MLP, exactly PyTorch's default initialisation after
``torch.manual_seed(seed)``).

This module must never execute anything a job supplies, never build a model
whose spec it has not validated, and never give a model persistent state
outside its parameters: buffers (the causal mask) are constants of the spec,
registered with ``persistent=False`` so they are in no state dict or bundle.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from consensus.types import IntArg, ModelSpec
from consensus.work import InvalidWork

MAX_PARAMETERS = 100_000_000
"""Largest model a job may name: every validator must be able to hold and replay it."""


# ---------------------------------------------------------------------------
# Layer sequences


class _Apply(nn.Module):
    """One layer of a model's layer sequence: a piece of its forward over modules it already owns.

    The modules are held in a plain tuple, not registered, so a layer view
    adds no parameter names and the model's state bundle is unchanged.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *owners: nn.Module) -> None:
        super().__init__()
        self._fn = fn
        self._owners = owners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        for owner in self._owners:
            yield from owner.parameters(recurse)


def layer_sequence(model: nn.Module) -> tuple[nn.Module, ...]:
    """The registry model as a sequence of layers: applied in order they compute its forward, op for op.

    This is what a pipeline job's ``layer_bounds`` index; each layer's
    ``parameters()`` are the model parameters it uses.
    """
    layers = getattr(model, "layers", None)
    if layers is None:
        raise InvalidWork(f"{type(model).__name__} has no layer sequence")
    out: tuple[nn.Module, ...] = layers()
    return out


def layer_parameter_names(model: nn.Module) -> tuple[tuple[str, ...], ...]:
    """For each layer of the sequence, the (model) names of the parameters it uses, in model order."""
    uses = [{id(p) for p in layer.parameters()} for layer in layer_sequence(model)]
    return tuple(tuple(n for n, p in model.named_parameters() if id(p) in ids) for ids in uses)


# ---------------------------------------------------------------------------
# MLP


class MLP(nn.Module):
    """``layers`` hidden Linear+ReLU layers of width ``hidden``, then a Linear to ``classes``."""

    def __init__(self, in_dim: int, hidden: int, layers: int, classes: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(dims):
            blocks += [nn.Linear(d_in, d_out), nn.ReLU()]
        blocks.append(nn.Linear(dims[-1], classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)  # [B, in_dim] -> [B, classes]
        return out

    def layers(self) -> tuple[nn.Module, ...]:
        """Each hidden Linear with its ReLU, then the output Linear."""
        mods = list(self.net)
        hidden = (nn.Sequential(*mods[i : i + 2]) for i in range(0, len(mods) - 1, 2))
        return (*hidden, mods[-1])


# ---------------------------------------------------------------------------
# Small CNN over square single-channel images given as flat vectors


class CNN(nn.Module):
    """Two 3x3 conv+ReLU layers, a 2x2 max-pool and a Linear classifier."""

    def __init__(self, side: int, channels: int, classes: int) -> None:
        super().__init__()
        self.side = side
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(channels * (side // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = x.view(b, 1, self.side, self.side)  # [B, side*side] -> [B, 1, side, side]
        h = F.relu(self.conv1(h))  # [B, C, side, side]
        h = F.relu(self.conv2(h))  # [B, C, side, side]
        h = self.pool(h)  # [B, C, side/2, side/2]
        out: torch.Tensor = self.head(h.flatten(1))  # [B, classes]
        return out

    def layers(self) -> tuple[nn.Module, ...]:
        """The first conv (reading the flat image), the second conv, then pool and classifier."""
        return (_Apply(self._first, self.conv1), _Apply(lambda h: F.relu(self.conv2(h)), self.conv2),
                _Apply(lambda h: self.head(self.pool(h).flatten(1)), self.head))

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x.view(x.shape[0], 1, self.side, self.side)))


# ---------------------------------------------------------------------------
# Character-level causal transformer (nanoGPT-style, pre-LN)


@dataclass(frozen=True, slots=True)
class TransformerConfig:
    vocab: int  # number of distinct tokens (characters); the size of the output layer
    ctx: int  # longest sequence the model reads; each position below it has an embedding
    d_model: int  # width of the residual stream and of every embedding
    n_layer: int  # number of transformer blocks
    n_head: int  # attention heads per block; d_model must divide evenly among them


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees positions <= t only.

    Written out with an explicit mask and softmax (no fused attention kernel)
    so that the CPU computation is plain, deterministic matmuls and reductions.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # [B, T, d]
        hd = c // self.n_head
        q, k, v = self.qkv(x).split(c, dim=2)  # each [B, T, d]
        q = q.view(b, t, self.n_head, hd).transpose(1, 2)  # [B, nh, T, hd]
        k = k.view(b, t, self.n_head, hd).transpose(1, 2)  # [B, nh, T, hd]
        v = v.view(b, t, self.n_head, hd).transpose(1, 2)  # [B, nh, T, hd]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # [B, nh, T, T]
        # Made per call, not held as a buffer: a model holds parameters only, so a skeleton on the meta device
        # (``build_model_skeleton``) has nothing real to lose.
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v  # [B, nh, T, hd]
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # [B, T, d]
        out: torch.Tensor = self.proj(y)  # [B, T, d]
        return out


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # [B, T, d]
        out: torch.Tensor = x + self.mlp(self.ln2(x))  # [B, T, d]
        return out


class CharTransformer(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, a final LayerNorm and a linear head."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        # nanoGPT's initialisation: small normal weights train far better than
        # PyTorch's N(0, 1) embeddings; it is drawn from the seeded generator too.
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]  # idx: [B, T] token indices
        assert t <= self.cfg.ctx, "sequence longer than the model's context"
        pos = torch.arange(t, device=idx.device)  # [T]
        x = self.tok_emb(idx) + self.pos_emb(pos)  # [B, T, d]
        for block in self.blocks:
            x = block(x)  # [B, T, d]
        out: torch.Tensor = self.head(self.ln_f(x))  # [B, T, vocab]
        return out

    def layers(self) -> tuple[nn.Module, ...]:
        """The embeddings, each block, then the final LayerNorm with the head."""
        return (_Apply(self._embed, self.tok_emb, self.pos_emb), *self.blocks,
                _Apply(lambda x: self.head(self.ln_f(x)), self.ln_f, self.head))

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        assert t <= self.cfg.ctx, "sequence longer than the model's context"
        out: torch.Tensor = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))
        return out


# ---------------------------------------------------------------------------
# The registry


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A registered model: its arguments with their inclusive bounds, and its constructor."""

    bounds: Mapping[str, tuple[int, int]]
    build: Callable[[dict[str, int]], nn.Module]
    check: Callable[[dict[str, int]], str | None] = lambda args: None


def _check_transformer(args: dict[str, int]) -> str | None:
    if args["d_model"] % args["n_head"]:
        return "d_model must be a multiple of n_head"
    return None


_REGISTRY: dict[str, ModelEntry] = {
    "mlp": ModelEntry(
        bounds={"classes": (1, 1 << 16), "hidden": (1, 1 << 14), "in_dim": (1, 1 << 16), "layers": (0, 64)},
        build=lambda a: MLP(a["in_dim"], a["hidden"], a["layers"], a["classes"]),
    ),
    "cnn": ModelEntry(
        bounds={"channels": (1, 1024), "classes": (1, 1 << 16), "side": (2, 256)},
        build=lambda a: CNN(a["side"], a["channels"], a["classes"]),
    ),
    "char_transformer": ModelEntry(
        bounds={"ctx": (1, 4096), "d_model": (1, 4096), "n_head": (1, 64), "n_layer": (1, 64), "vocab": (1, 1 << 16)},
        build=lambda a: CharTransformer(TransformerConfig(a["vocab"], a["ctx"], a["d_model"], a["n_layer"], a["n_head"])),
        check=_check_transformer,
    ),
}


def registry_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_model_bounds(name: str) -> dict[str, tuple[int, int]]:
    """A registered model's arguments with their inclusive bounds, by name (read by the doc generator)."""
    return dict(sorted(_REGISTRY[name].bounds.items()))


def model_args(spec: ModelSpec) -> dict[str, int]:
    """The spec's arguments by name (unvalidated)."""
    return {a.name: a.value for a in spec.args}


def make_model_spec(name: str, **args: int) -> ModelSpec:
    """A spec with its arguments in the canonical (sorted) order."""
    return ModelSpec(name=name, args=tuple(IntArg(k, v) for k, v in sorted(args.items())))


def validate_model_spec(spec: ModelSpec) -> None:
    """Raise ``InvalidWork`` unless the spec names a registered model with exactly its arguments in bounds."""
    entry = _REGISTRY.get(spec.name)
    if entry is None:
        raise InvalidWork(f"unknown model {spec.name!r}; the registry has {registry_names()}")
    names = [a.name for a in spec.args]
    if names != sorted(set(names)):
        raise InvalidWork("model arguments must be sorted by name and unique")
    if set(names) != set(entry.bounds):
        raise InvalidWork(f"model {spec.name!r} takes arguments {sorted(entry.bounds)}, got {names}")
    args = model_args(spec)
    for name, (lo, hi) in entry.bounds.items():
        if not lo <= args[name] <= hi:
            raise InvalidWork(f"model argument {name}={args[name]} is out of range [{lo}, {hi}]")
    problem = entry.check(args)
    if problem:
        raise InvalidWork(f"model {spec.name!r}: {problem}")
    # Counting on the meta device allocates nothing, so an oversized spec is
    # refused before anyone tries to hold it.
    with torch.device("meta"):
        count = sum(p.numel() for p in entry.build(args).parameters())
    if count > MAX_PARAMETERS:
        raise InvalidWork(f"model has {count} parameters, over the limit of {MAX_PARAMETERS}")


def build_model(spec: ModelSpec, *, seed: int, dtype: torch.dtype) -> nn.Module:
    """The spec's model with its deterministic initial weights, on the CPU, in ``dtype``.

    The global RNG is forked, so building a model never disturbs the caller's
    random state.
    """
    validate_model_spec(spec)
    entry = _REGISTRY[spec.name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.build(model_args(spec))
    return model.to(dtype)


def build_model_on_meta(spec: ModelSpec) -> nn.Module:
    """The spec's model on torch's meta device: its shapes and layers, with no memory behind them."""
    validate_model_spec(spec)
    with torch.device("meta"):
        return _REGISTRY[spec.name].build(model_args(spec))


def build_model_skeleton(spec: ModelSpec, *, dtype: torch.dtype) -> nn.Module:
    """The spec's model in ``dtype`` on the meta device, for stage units to give storage to one range at a time.

    Registry models hold parameters only (no buffers), so nothing a forward
    reads is lost by building on meta; a model that held one would fail here.
    """
    model = build_model_on_meta(spec).to(dtype)
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        raise InvalidWork(f"{spec.name} holds buffers {buffers[:3]}, which a skeleton cannot keep")
    return model
