"""The model registry: validation, deterministic initialisation, parameters only, skeletons on meta."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from consensus.types import IntArg, ModelSpec
from consensus.work import InvalidWork
from tdml_node.work import models
from tdml_node.work.models import (
    build_model,
    build_model_skeleton,
    make_model_spec,
    registry_names,
    validate_model_spec,
)

MLP_W = make_model_spec("mlp", in_dim=64, hidden=128, layers=2, classes=10)
CNN = make_model_spec("cnn", side=8, channels=4, classes=10)
TRANSFORMER = make_model_spec("char_transformer", vocab=11, ctx=16, d_model=32, n_layer=2, n_head=4)


def test_registry_names() -> None:
    assert registry_names() == ("char_transformer", "cnn", "mlp")


def test_mlp_equals_pytorch_default_init_after_manual_seed() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    model = build_model(MLP_W, seed=0, dtype=torch.float32)
    ours = list(model.parameters())
    theirs = list(plain.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_build_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model(TRANSFORMER, seed=7, dtype=torch.float64)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_model(TRANSFORMER, seed=7, dtype=torch.float64)
    c = build_model(TRANSFORMER, seed=8, dtype=torch.float64)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert all(v.dtype == torch.float64 for v in sa.values())


@pytest.mark.parametrize("spec", [MLP_W, CNN, TRANSFORMER], ids=["mlp", "cnn", "transformer"])
def test_a_model_holds_parameters_only_and_its_skeleton_holds_no_memory(spec: ModelSpec) -> None:
    model = build_model(spec, seed=0, dtype=torch.float32)
    assert not list(model.named_buffers())
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}
    skeleton = build_model_skeleton(spec, dtype=torch.float64)
    assert [(n, p.shape) for n, p in skeleton.named_parameters()] == [(n, p.shape) for n, p in model.named_parameters()]
    assert all(p.is_meta and p.dtype == torch.float64 for p in skeleton.parameters())


def test_a_skeleton_refuses_a_model_that_holds_a_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    def with_buffer(spec: ModelSpec) -> nn.Module:
        with torch.device("meta"):
            m = nn.Linear(2, 2)
            m.register_buffer("scale", torch.ones(2))
            return m

    monkeypatch.setattr(models, "build_model_on_meta", with_buffer)
    with pytest.raises(InvalidWork, match="buffers"):
        build_model_skeleton(MLP_W, dtype=torch.float32)


def test_transformer_is_causal_and_shapes() -> None:
    model = build_model(TRANSFORMER, seed=0, dtype=torch.float64)
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(0))
    out = model(idx)
    assert out.shape == (2, 16, 11)
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 11
    # Positions before the change see none of it.
    assert torch.equal(model(changed)[:, :10], out[:, :10])
    assert not torch.equal(model(changed)[:, 10:], out[:, 10:])


def test_cnn_reads_flat_images() -> None:
    model = build_model(CNN, seed=0, dtype=torch.float32)
    assert model(torch.zeros(3, 64)).shape == (3, 10)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec("resnet", ()), "unknown model"),
        (make_model_spec("mlp", in_dim=4, hidden=4, classes=2), "takes arguments"),
        (make_model_spec("mlp", in_dim=4, hidden=4, layers=1, classes=2, extra=1), "takes arguments"),
        (ModelSpec("mlp", (IntArg("in_dim", 4), IntArg("classes", 2), IntArg("hidden", 4), IntArg("layers", 1))), "sorted"),
        (ModelSpec("mlp", (IntArg("classes", 2), IntArg("classes", 2), IntArg("hidden", 4), IntArg("in_dim", 4), IntArg("layers", 1))), "sorted"),
        (make_model_spec("mlp", in_dim=0, hidden=4, layers=1, classes=2), "out of range"),
        (make_model_spec("char_transformer", vocab=10, ctx=8, d_model=30, n_layer=1, n_head=4), "multiple of n_head"),
        (make_model_spec("mlp", in_dim=65536, hidden=16384, layers=4, classes=2), "parameters"),
    ],
)
def test_invalid_specs(spec: ModelSpec, message: str) -> None:
    with pytest.raises(InvalidWork, match=message):
        validate_model_spec(spec)
    with pytest.raises(InvalidWork):
        build_model(spec, seed=0, dtype=torch.float32)
