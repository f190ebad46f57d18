"""The pipeline unit layout: places, input links, result units, claimed outputs, spec rules."""

from __future__ import annotations

import dataclasses

import pytest

from consensus import codec, crypto, pipeline
from consensus.pipeline import PHASE_BACKWARD, PHASE_FORWARD, PHASE_LAST, UnitPlace
from consensus.types import (
    JobSpec,
    JobState,
    PipelineSpec,
    PipelineState,
    StageLinks,
    WorkSubmission,
)
from tests.consensus.consensus_fixtures import make_job_spec


def pipeline_spec(stages: int, *, shards: int = 2, micro: int = 2) -> JobSpec:
    spec = make_job_spec(shards=shards)
    return dataclasses.replace(spec, pipeline=PipelineSpec(tuple(range(stages + 1)), micro))


def test_a_plain_job_has_one_unit_per_shard_and_each_unit_is_its_own_last_stage() -> None:
    spec = make_job_spec(shards=3)
    assert pipeline.units_per_step(spec) == 3
    assert [pipeline.place_of(spec, u) for u in range(3)] == [UnitPlace(k, 0, PHASE_LAST, 0) for k in range(3)]
    assert pipeline.input_units(spec, 1) == ()
    assert pipeline.stage_result_units(spec) == ((0, 1, 2),)
    assert pipeline.loss_units(spec) == (0, 1, 2)
    assert pipeline.successor(spec, 0) is None
    assert not pipeline.emits_gradient(spec, 0)


def test_four_stages_give_seven_units_per_shard_in_chain_order() -> None:
    spec = pipeline_spec(4, shards=2)
    assert pipeline.units_per_step(spec) == 14
    places = [pipeline.place_of(spec, u) for u in range(7, 14)]
    assert [(p.shard, p.stage, p.phase) for p in places] == [
        (1, 0, PHASE_FORWARD),
        (1, 1, PHASE_FORWARD),
        (1, 2, PHASE_FORWARD),
        (1, 3, PHASE_LAST),
        (1, 2, PHASE_BACKWARD),
        (1, 1, PHASE_BACKWARD),
        (1, 0, PHASE_BACKWARD),
    ]
    assert [p.position for p in places] == list(range(7))
    assert all(pipeline.unit_index(spec, p.shard, p.position) == u for u, p in zip(range(7, 14), places, strict=True))
    with pytest.raises(ValueError):
        pipeline.place_of(spec, 14)


def test_a_units_partner_is_the_other_phase_of_its_shard_and_stage() -> None:
    spec = pipeline_spec(4, shards=2)
    for u in range(pipeline.units_per_step(spec)):
        place, other = pipeline.place_of(spec, u), pipeline.partner(spec, u)
        if place.phase == PHASE_LAST:
            assert other is None
            continue
        assert other is not None and pipeline.partner(spec, other) == u
        mate = pipeline.place_of(spec, other)
        assert (mate.shard, mate.stage) == (place.shard, place.stage) and mate.phase != place.phase
    assert pipeline.partner(make_job_spec(shards=2), 0) is None


def test_each_unit_reads_the_activations_it_starts_from_and_the_gradient_handed_to_it() -> None:
    spec = pipeline_spec(3, shards=1)  # F0=0, F1=1, LAST=2, B1=3, B0=4
    assert pipeline.input_units(spec, 0) == ()
    assert pipeline.input_units(spec, 1) == ((0, False),)
    assert pipeline.input_units(spec, 2) == ((1, False),)
    assert pipeline.input_units(spec, 3) == ((0, False), (2, True))
    assert pipeline.input_units(spec, 4) == ((3, True),)
    assert [pipeline.emits_gradient(spec, u) for u in range(5)] == [False, False, True, True, False]
    assert [pipeline.emits_parameter_gradients(spec, u) for u in range(5)] == [False, False, True, True, True]
    assert [pipeline.has_loss(spec, u) for u in range(5)] == [False, False, True, False, False]
    assert pipeline.stage_result_units(spec) == ((4,), (3,), (2,))
    assert [pipeline.successor(spec, u) for u in range(5)] == [1, 2, 3, 4, None]


def test_expected_inputs_come_from_accepted_outputs_and_are_missing_until_accepted() -> None:
    spec = pipeline_spec(3, shards=1)
    h = [crypto.sha256(bytes([i])) for i in range(10)]
    results = [h[0], h[1], h[2], None, None]
    gradients: list = [None, None, h[7], None, None]
    assert pipeline.expected_inputs(spec, 1, results, gradients) == (h[0],)
    assert pipeline.expected_inputs(spec, 3, results, gradients) == (h[0], h[7])
    assert pipeline.expected_inputs(spec, 4, results, gradients) is None
    gradients[3] = h[8]
    assert pipeline.expected_inputs(spec, 4, results, gradients) == (h[8],)


def test_the_claimed_output_binds_the_handed_on_gradient() -> None:
    spec = pipeline_spec(2)
    sub = WorkSubmission(
        job=crypto.sha256(b"j"), step=0, shard=1, trainer=bytes(32), parent_model_root=crypto.sha256(b"m"),
        checkpoint_digests=(), result_digest=crypto.sha256(b"r"), losses=(0,), receipt=spec.profile,
        links=StageLinks(crypto.sha256(b"s"), (crypto.sha256(b"a"),), crypto.sha256(b"g")),
    )
    bound = pipeline.claimed_output(sub)
    assert bound not in (sub.result_digest, crypto.sha256(b"g"))
    other = dataclasses.replace(sub, links=StageLinks(crypto.sha256(b"s"), (crypto.sha256(b"a"),), crypto.sha256(b"h")))
    assert pipeline.claimed_output(other) != bound
    plain = dataclasses.replace(sub, links=None)
    assert pipeline.claimed_output(plain) == sub.result_digest


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"pipeline": PipelineSpec((1, 2), 1)}, "start at 0"),
        ({"pipeline": PipelineSpec((0,), 1)}, "at least one stage"),
        ({"pipeline": PipelineSpec((0, 2, 2), 1)}, "strictly increasing"),
        ({"pipeline": PipelineSpec((0, 1, 2), 3)}, "micro_batches"),
        ({"pipeline": PipelineSpec((0, 1, 2), 1), "inner_steps": 2}, "inner_steps"),
        ({"pipeline": PipelineSpec(tuple(range(66)), 1), "shards": 4, "global_batch": 32}, "exceeds"),
    ],
)
def test_a_malformed_pipeline_is_named(change: dict, problem: str) -> None:
    spec = dataclasses.replace(make_job_spec(shards=2), **change)
    found = pipeline.pipeline_spec_problem(spec)
    assert found is not None and problem in found


def test_a_well_formed_pipeline_has_no_problem() -> None:
    assert pipeline.pipeline_spec_problem(pipeline_spec(4, micro=8)) is None
    assert pipeline.pipeline_spec_problem(make_job_spec()) is None


def test_the_new_messages_round_trip_and_their_model_root_is_the_hash_of_the_state_blob() -> None:
    spec = pipeline_spec(4)
    assert codec.decode(codec.encode(spec), JobSpec) == spec
    state = PipelineState(tuple(crypto.sha256(bytes([i])) for i in range(4)))
    blob = codec.encode(state)
    assert crypto.sha256(blob) == crypto.hash_value(state)
    assert codec.decode(blob, PipelineState) == state
    assert [f.name for f in dataclasses.fields(JobState)][-2:] == ["output_gradients", "key_shares"]
