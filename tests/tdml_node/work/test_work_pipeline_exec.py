"""A pipeline step's aggregation equals a plain PyTorch step of the staged semantics, bit for bit."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from consensus import pipeline
from consensus.types import PipelineSpec
from tdml_node.work import unit
from tdml_node.work.datasets import Dataset
from tdml_node.work.jobs import get_job
from tdml_node.work.models import build_model
from tdml_node.work.pipeline_exec import aggregate_step, initial_state_blobs
from tdml_node.work.pipeline_state import encode_stage_states
from tdml_node.work.profile import apply_profile
from tdml_node.work.reference import run_reference
from tdml_node.work.stage import GRAD_PREFIX, LOSS_KEY
from tdml_node.work.tensors import bundle_digest, decode_bundle, f32_bits, f32_from_bits


def test_two_steps_of_stage_wise_aggregation_equal_a_plain_loop() -> None:
    base, data = get_job("digits-mlp")
    spec = dataclasses.replace(base, pipeline=PipelineSpec((0, 1, 2, 3), 2), eval_every=2, steps=2)
    apply_profile(spec.profile)
    dataset = Dataset.decode(data, task=spec.task, seq_len=spec.seq_len, dtype=torch.float32, device=torch.device("cpu"))
    m = spec.pipeline.micro_batches
    chain_model = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
    root, blobs = initial_state_blobs(chain_model, spec)
    assert root == bundle_digest(blobs[-1])
    stage_states = [decode_bundle(b) for b in blobs[:-1]]

    plain = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
    opt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, foreach=False)
    worker = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
    for step in range(2):
        results: list[dict[str, torch.Tensor]] = [{} for _ in range(pipeline.units_per_step(spec))]
        total: dict[str, torch.Tensor] = {}
        for k in range(spec.shards):
            worker.load_state_dict(plain.state_dict())
            worker.zero_grad(set_to_none=True)
            x, y = unit.unit_batch(spec, dataset, step, k, 0)
            loss_sum = None
            for xm, ym in zip(torch.chunk(x, m), torch.chunk(y, m), strict=True):
                loss = F.cross_entropy(worker(xm), ym)
                loss.backward()
                loss_sum = loss.detach().clone() if loss_sum is None else loss_sum.add_(loss.detach())
            grads = {n: p.grad.clone() for n, p in worker.named_parameters()}
            for s, units in enumerate(pipeline.stage_result_units(spec)):
                names = [n for n in grads if n.startswith(f"net.{2 * s}.")]
                results[units[k]] = {GRAD_PREFIX + n: grads[n] for n in names}
            results[pipeline.loss_units(spec)[k]][LOSS_KEY] = f32_from_bits([f32_bits(torch.div(loss_sum, m))])
            for n, g in grads.items():
                total[n] = g.clone() if n not in total else total[n].add_(g)
        out = aggregate_step(chain_model, spec, step, stage_states, results, dataset)
        for n, p in plain.named_parameters():
            p.grad = torch.div(total[n], spec.shards * m)
        opt.step()
        expected = [bundle_digest(b) for b in encode_stage_states(plain, spec, opt)]
        assert [bundle_digest(b) for b in out.blobs[:-1]] == expected
        assert out.model_root == bundle_digest(out.blobs[-1])
        stage_states = [decode_bundle(b) for b in out.blobs[:-1]]
    assert out.evaluation.total > 0 and out.evaluation.correct > 0
    reference = run_reference(spec, data)
    assert reference.final_root == out.model_root
    assert reference.outcomes[-1].eval_correct == out.evaluation.correct
