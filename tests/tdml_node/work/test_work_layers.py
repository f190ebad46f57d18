"""Layer sequences of the registry models: what a pipeline job's stages split.

Applied in order, a model's layers compute its forward bit for bit; each
parameter belongs to exactly one layer; and a backward run stage by stage,
each stage starting from a detached copy of the activation before it, gives
the whole model's gradients bit for bit. That last property is why a
pipeline of S stages can equal the S = 1 run exactly.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tdml_node.work.models import (
    build_model,
    layer_parameter_names,
    layer_sequence,
    make_model_spec,
)

MODELS = {
    "mlp": (make_model_spec("mlp", in_dim=16, hidden=12, layers=3, classes=5), lambda g: torch.randn(6, 16, generator=g)),
    "cnn": (make_model_spec("cnn", side=6, channels=3, classes=4), lambda g: torch.randn(6, 36, generator=g)),
    "char_transformer": (
        make_model_spec("char_transformer", vocab=11, ctx=8, d_model=16, n_layer=3, n_head=2),
        lambda g: torch.randint(0, 11, (6, 8), generator=g),
    ),
}


def _model_and_input(name: str) -> tuple[nn.Module, torch.Tensor]:
    spec, make_input = MODELS[name]
    return build_model(spec, seed=3, dtype=torch.float32), make_input(torch.Generator().manual_seed(5))


def _loss(logits: torch.Tensor, classes: int) -> torch.Tensor:
    target = torch.arange(logits.reshape(-1, logits.shape[-1]).shape[0]) % classes
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_layers_in_order_compute_the_forward_bit_for_bit(name: str) -> None:
    model, x = _model_and_input(name)
    h = x
    for layer in layer_sequence(model):
        h = layer(h)
    assert torch.equal(h, model(x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_belongs_to_exactly_one_layer_and_no_name_changes(name: str) -> None:
    model, _ = _model_and_input(name)
    per_layer = layer_parameter_names(model)
    flat = [n for names in per_layer for n in names]
    assert flat == [n for n, _ in model.named_parameters()]
    assert all(per_layer)
    assert not any("_owners" in n for n in model.state_dict())


def test_the_layer_counts_are_the_ones_the_presets_split() -> None:
    assert len(layer_sequence(_model_and_input("mlp")[0])) == 4  # 3 hidden layers + output
    assert len(layer_sequence(_model_and_input("cnn")[0])) == 3
    assert len(layer_sequence(_model_and_input("char_transformer")[0])) == 5  # embeddings + 3 blocks + head


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_backward_stage_by_stage_gives_the_whole_models_gradients_bit_for_bit(name: str) -> None:
    whole, x = _model_and_input(name)
    classes = whole(x).shape[-1]
    whole.zero_grad(set_to_none=True)
    _loss(whole(x), classes).backward()
    expected = {n: p.grad.clone() for n, p in whole.named_parameters() if p.grad is not None}

    layers = layer_sequence(whole)
    for cuts in itertools.combinations(range(1, len(layers)), min(2, len(layers) - 1)):
        whole.zero_grad(set_to_none=True)
        bounds = (0, *cuts, len(layers))
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        h = x
        for lo, hi in itertools.pairwise(bounds):
            start = h.detach().requires_grad_(h.is_floating_point())
            out = start
            for layer in layers[lo:hi]:
                out = layer(out)
            inputs.append(start)
            outputs.append(out)
            h = out
        _loss(outputs[-1], classes).backward()
        for stage in range(len(outputs) - 2, -1, -1):
            handed = inputs[stage + 1].grad
            assert handed is not None
            torch.autograd.backward(outputs[stage], handed)
        got = {n: p.grad for n, p in whole.named_parameters() if p.grad is not None}
        assert set(got) == set(expected), cuts
        assert all(torch.equal(got[n], expected[n]) for n in expected), cuts
