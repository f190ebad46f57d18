"""The single-process reference run equals the chain's chained units and aggregations, bit for bit."""

from __future__ import annotations

import dataclasses

from work_harness import job_state, local_job, make_executor, small_synthetic

from consensus.types import Decimal, JobSpec, ScheduleSpec
from tdml_node.work.jobs import get_job, make_job, optimizer_spec
from tdml_node.work.models import make_model_spec
from tdml_node.work.profile import local_profile
from tdml_node.work.reference import ReferenceStep, run_reference


def chained(spec: JobSpec, data: bytes) -> list[ReferenceStep]:
    """The chain's computation: every shard trained by the executor, then aggregated, step after step."""
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    out = []
    for step in range(spec.steps):
        job = job_state(spec, root, step)
        results = tuple(ex.train_unit(job, k).result_digest for k in range(spec.shards))
        result = ex.step_outcome(job, results)
        root, train, eval_loss, correct, total = (
            result.model_root, result.train_loss, result.eval_loss, result.eval_correct, result.eval_total
        )
        out.append(ReferenceStep(step, root, train, eval_loss, correct, total))
    return out


def test_reference_equals_chain_on_workload_w() -> None:
    spec, data = get_job("digits-mlp", steps=20)
    ref = run_reference(spec, data)
    assert list(ref.outcomes) == chained(spec, data)
    assert ref.final_root == ref.outcomes[-1].model_root
    assert ref.outcomes[9].eval_total == 360 and ref.outcomes[8].eval_total == 0


def test_reference_equals_chain_for_local_sgd() -> None:
    spec, data = local_job(steps=3)
    assert list(run_reference(spec, data).outcomes) == chained(spec, data)
    preset, preset_data = get_job("digits-mlp-local", steps=2)
    assert list(run_reference(preset, preset_data).outcomes) == chained(preset, preset_data)


def test_reference_equals_chain_with_adamw_schedule_and_float64() -> None:
    data = small_synthetic()
    spec = make_job(
        "adamw-linear",
        dataset=data,
        model=make_model_spec("mlp", in_dim=16, hidden=16, layers=1, classes=4),
        optimizer=optimizer_spec("adamw", lr="0.01", weight_decay="0.1"),
        schedule=ScheduleSpec("linear", warmup_steps=2, final_fraction=Decimal("0.1")),
        global_batch=48,
        shards=3,
        steps=5,
        eval_every=2,
    )
    spec = dataclasses.replace(spec, profile=local_profile(dtype="float64"))
    assert list(run_reference(spec, data).outcomes) == chained(spec, data)
    local, _ = local_job(steps=2, optimizer="adamw")
    assert list(run_reference(local, data).outcomes) == chained(local, data)


def test_reference_calls_back_and_stops_early() -> None:
    spec, data = get_job("synthetic-mlp", steps=50)
    seen: list[int] = []
    result = run_reference(spec, data, steps=3, on_step=lambda s: seen.append(s.step))
    assert seen == [0, 1, 2] and len(result.outcomes) == 3


def test_default_job_reaches_95_percent_test_accuracy() -> None:
    """Workload W end to end: 300 steps of the default preset, about a second on one core."""
    spec, data = get_job("digits-mlp")
    final = run_reference(spec, data).outcomes[-1]
    assert final.eval_total == 360
    assert final.eval_correct / final.eval_total >= 0.95
