"""A shard through every stage unit, blob by blob, equals the whole model's micro-batch gradients bit for bit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from consensus import pipeline
from consensus.pipeline import PHASE_BACKWARD, PHASE_FORWARD
from consensus.types import JobSpec, PipelineSpec
from consensus.work import InvalidWork
from tdml_node.work import stage
from tdml_node.work.jobs import get_job
from tdml_node.work.models import build_model, make_model_spec
from tdml_node.work.tensors import decode_bundle, f32_bits

CASES = {
    "mlp-4": (make_model_spec("mlp", in_dim=16, hidden=12, layers=3, classes=5), (0, 1, 2, 3, 4),
              lambda g: torch.randn(8, 16, generator=g), 5),
    "mlp-2": (make_model_spec("mlp", in_dim=16, hidden=12, layers=3, classes=5), (0, 3, 4),
              lambda g: torch.randn(8, 16, generator=g), 5),
    "transformer-3": (make_model_spec("char_transformer", vocab=11, ctx=8, d_model=16, n_layer=3, n_head=2),
                      (0, 2, 4, 5), lambda g: torch.randint(0, 11, (8, 8), generator=g), 11),
}


def _job(bounds: tuple[int, ...], micro: int) -> JobSpec:
    spec, _ = get_job("digits-mlp")
    return dataclasses.replace(spec, shards=1, global_batch=8, pipeline=PipelineSpec(bounds, micro))


def _params(model: nn.Module, spec: JobSpec, s: int) -> dict[str, nn.Parameter]:
    named = dict(model.named_parameters())
    return {n: named[n] for n in stage.stage_parameter_names(model, spec, s)}


def run_shard(model: nn.Module, spec: JobSpec, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
    """Every unit of one shard in chain order, each reading only the decoded blobs before it."""
    assert spec.pipeline is not None
    m = spec.pipeline.micro_batches
    xs, ys = stage.split_micro_batches(x, m), stage.split_micro_batches(y, m)
    acts: dict[int, list[torch.Tensor]] = {}
    grads: dict[str, torch.Tensor] = {}
    handed: list[torch.Tensor] = []
    bits = 0
    for u in range(pipeline.units_per_step(spec)):
        place = pipeline.place_of(spec, u)
        s = place.stage
        layers = stage.stage_layers(model, spec, s)
        inputs = xs if s == 0 else acts[s - 1]
        hands_on = pipeline.emits_gradient(spec, u)
        if place.phase == PHASE_FORWARD:
            acts[s] = stage.read_micro_batches(decode_bundle(stage.forward_unit(layers, inputs)), stage.ACT_PREFIX, m)
            continue
        if place.phase == PHASE_BACKWARD:
            result, out = stage.backward_unit(layers, _params(model, spec, s), inputs, handed, hands_on=hands_on)
        else:
            result, bits, out = stage.last_unit(layers, _params(model, spec, s), inputs, ys, hands_on=hands_on)
        assert (out is not None) == hands_on
        if out is not None:
            handed = stage.read_micro_batches(decode_bundle(out), stage.ACT_GRAD_PREFIX, m)
        for name, t in decode_bundle(result).items():
            if name.startswith(stage.GRAD_PREFIX):
                grads[name[len(stage.GRAD_PREFIX):]] = t
    return grads, bits


def whole_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: int) -> tuple[dict[str, torch.Tensor], int]:
    """The plain-PyTorch meaning: backward each micro-batch's mean loss, gradients accumulating in order."""
    model.zero_grad(set_to_none=True)
    total = None
    for xm, ym in zip(torch.chunk(x, m), torch.chunk(y, m), strict=True):
        logits = model(xm)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ym.reshape(-1))
        loss.backward()
        total = loss.detach().clone() if total is None else total.add_(loss.detach())
    assert total is not None
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, f32_bits(torch.div(total, m))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("micro", [1, 2, 4])
def test_a_shard_through_the_stage_units_equals_the_whole_model_bit_for_bit(case: str, micro: int) -> None:
    model_spec, bounds, make_x, classes = CASES[case]
    g = torch.Generator().manual_seed(11)
    x = make_x(g)
    y = torch.randint(0, classes, (8, 8) if x.dtype == torch.long else (8,), generator=g)
    model = build_model(model_spec, seed=2, dtype=torch.float32)
    expected, expected_bits = whole_model(model, x, y, micro)
    got, bits = run_shard(model, _job(bounds, micro), x, y)
    assert set(got) == {n for n, _ in model.named_parameters()}
    assert all(torch.equal(got[n], expected[n]) for n in expected)
    assert bits == expected_bits


def test_a_changed_activation_changes_every_output_after_it() -> None:
    model_spec, bounds, make_x, _ = CASES["mlp-4"]
    spec = _job(bounds, 2)
    model = build_model(model_spec, seed=2, dtype=torch.float32)
    x = make_x(torch.Generator().manual_seed(1))
    layers = stage.stage_layers(model, spec, 1)
    honest = stage.forward_unit(layers, stage.split_micro_batches(x @ torch.ones(16, 12), 2))
    shifted = stage.forward_unit(layers, stage.split_micro_batches(x @ torch.ones(16, 12) + 1e-3, 2))
    assert honest != shifted


def test_a_bundle_with_missing_or_extra_micro_batches_is_malformed() -> None:
    with pytest.raises(InvalidWork):
        stage.read_micro_batches({"act/0": torch.zeros(1)}, stage.ACT_PREFIX, 2)
    with pytest.raises(InvalidWork):
        stage.read_micro_batches({"act/0": torch.zeros(1), "act/1": torch.zeros(1), "x": torch.zeros(1)}, stage.ACT_PREFIX, 2)
    with pytest.raises(InvalidWork):
        stage.split_micro_batches(torch.zeros(5, 2), 2)
