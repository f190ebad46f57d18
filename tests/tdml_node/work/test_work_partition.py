"""Partitions of a model into pipeline stages: estimates, balanced splits, budgets, bounds checks."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.pipeline import pipeline_spec_problem
from consensus.types import DecimalArg, OptimizerSpec, PipelineSpec
from consensus.work import InvalidWork
from tdml_node.work.jobs import get_job
from tdml_node.work.models import make_model_spec
from tdml_node.work.partition import (
    balanced_bounds,
    budget_bounds,
    check_bounds,
    estimate_layers,
    make_pipeline,
)


def _spec():  # the default preset, with a 4-layer MLP
    spec, _ = get_job("digits-mlp")
    return dataclasses.replace(spec, model=make_model_spec("mlp", in_dim=64, hidden=64, layers=3, classes=10))


def test_the_estimate_counts_parameters_optimizer_state_and_one_micro_batch_of_output() -> None:
    spec = _spec()
    est = estimate_layers(spec, micro_batch=8)
    assert len(est) == 4
    assert est[0].parameters == (64 * 64 + 64) * 4
    assert est[-1].parameters == (64 * 10 + 10) * 4
    assert est[0].activation == 8 * 64 * 4 and est[-1].activation == 8 * 10 * 4
    adam = dataclasses.replace(spec, optimizer=OptimizerSpec("adamw", (DecimalArg("lr", Decimal("0.01")),)))
    assert [e.optimizer for e in estimate_layers(adam, 8)] == [2 * e.parameters for e in est]
    # In the profile's dtype: float64 doubles every figure.
    wide = dataclasses.replace(spec, profile=dataclasses.replace(spec.profile, dtype="float64"))
    assert [e.total for e in estimate_layers(wide, 8)] == [2 * e.total for e in est]


def test_a_stage_count_gives_the_split_with_the_smallest_largest_stage() -> None:
    assert balanced_bounds((5, 1, 1, 1, 5), 3) == (0, 1, 4, 5)
    assert balanced_bounds((1, 1, 1, 1), 4) == (0, 1, 2, 3, 4)
    assert balanced_bounds((3,), 1) == (0, 1)
    with pytest.raises(InvalidWork):
        balanced_bounds((1, 1), 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=9), st.integers(1, 9))
def test_the_balanced_split_is_optimal_among_all_contiguous_splits(costs: list[int], stages: int) -> None:
    import itertools

    if stages > len(costs):
        return
    bounds = balanced_bounds(tuple(costs), stages)
    assert bounds[0] == 0 and bounds[-1] == len(costs) and len(bounds) == stages + 1
    assert all(b > a for a, b in itertools.pairwise(bounds))
    got = max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds))
    best = min(
        max(sum(costs[a:b]) for a, b in itertools.pairwise((0, *cut, len(costs))))
        for cut in itertools.combinations(range(1, len(costs)), stages - 1)
    )
    assert got == best


def test_a_budget_gives_the_fewest_stages_that_fit_and_refuses_a_layer_over_it() -> None:
    assert budget_bounds((4, 4, 4, 4), 8) == (0, 2, 4)
    assert budget_bounds((4, 4, 4, 4), 100) == (0, 4)
    with pytest.raises(InvalidWork, match="over the budget"):
        budget_bounds((4, 9), 8)


def test_make_pipeline_takes_exactly_one_way_and_its_result_is_a_valid_job() -> None:
    spec = _spec()
    by_count = make_pipeline(spec, micro_batches=2, stages=4)
    assert by_count == PipelineSpec((0, 1, 2, 3, 4), 2)
    total = sum(e.total for e in estimate_layers(spec, spec.global_batch // spec.shards // 2))
    by_budget = make_pipeline(spec, micro_batches=2, memory_budget=total // 2 + 1)
    assert len(by_budget.layer_bounds) - 1 >= 2
    job = dataclasses.replace(spec, pipeline=by_count)
    assert pipeline_spec_problem(job) is None
    check_bounds(job)
    with pytest.raises(InvalidWork):
        make_pipeline(spec, micro_batches=2, stages=2, memory_budget=10)
    with pytest.raises(InvalidWork, match="layers"):
        check_bounds(dataclasses.replace(spec, pipeline=PipelineSpec((0, 1, 5), 1)))
