"""Pipeline units through the torch executor: trained from linked blobs, replayed alone, aggregated to the reference."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from work_harness import digits_job, job_state, make_executor, submission_for, verdict_for

from consensus import pipeline
from consensus.types import (
    FAILURE_MALFORMED,
    FAILURE_NONE,
    FAILURE_REPLAY,
    Hash32,
    JobSpec,
    JobState,
    PipelineSpec,
    WorkSubmission,
)
from consensus.work import InvalidWork, check_unit
from tdml_node.work import executor as executor_module
from tdml_node.work import stage_unit
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.export import export_model, load_exported
from tdml_node.work.models import build_model, build_model_skeleton
from tdml_node.work.reference import run_reference
from tdml_node.work.stage import ACT_PREFIX, stage_parameter_names
from tdml_node.work.tensors import decode_bundle, encode_bundle


def _pipeline_job(micro: int = 2, steps: int = 2) -> tuple[JobSpec, bytes]:
    spec, data = digits_job(steps=steps)
    return dataclasses.replace(spec, pipeline=PipelineSpec((0, 1, 2, 3), micro), eval_every=steps), data


def _train_step(ex: TorchExecutor, job: JobState) -> list[WorkSubmission]:
    """Every unit of the step in unit order (each shard's chain in order), linked to the outputs before it."""
    spec = job.spec
    count = pipeline.units_per_step(spec)
    results: list[Hash32 | None] = [None] * count
    gradients: list[Hash32 | None] = [None] * count
    subs = []
    for u in range(count):
        inputs = pipeline.expected_inputs(spec, u, results, gradients)
        assert inputs is not None, u
        trained = ex.train_stage(job, u, inputs)
        sub = submission_for(job, u, trained)
        assert trained.links is not None and trained.links.inputs == inputs
        assert (trained.links.output_gradient is not None) == pipeline.emits_gradient(spec, u)
        assert len(sub.losses) == (1 if pipeline.has_loss(spec, u) else 0)
        results[u], gradients[u] = trained.result_digest, trained.links.output_gradient
        subs.append(sub)
    return subs


def test_a_pipeline_job_run_unit_by_unit_through_the_executor_ends_at_the_reference() -> None:
    spec, data = _pipeline_job()
    ex = make_executor(data)
    checker = make_executor(data)
    root = ex.initial_model_root(spec)
    assert checker.initial_model_root(spec) == root
    for step in range(spec.steps):
        job = job_state(spec, root, step)
        subs = _train_step(ex, job)
        for sub in subs:
            for digest in (sub.result_digest, *sub.links.inputs):  # type: ignore[union-attr]
                checker.blobs.put(ex.blobs.get(digest))  # type: ignore[arg-type]
            if sub.links is not None and sub.links.output_gradient is not None:
                checker.blobs.put(ex.blobs.get(sub.links.output_gradient))  # type: ignore[arg-type]
            assert check_unit(checker, job, sub, (0,)).failure == FAILURE_NONE, sub.shard
        outcome = ex.step_outcome(job, tuple(s.result_digest for s in subs))
        assert checker.step_outcome(job, tuple(s.result_digest for s in subs)) == outcome
        root = outcome.model_root
    reference = run_reference(spec, data)
    assert root == reference.final_root
    assert outcome.eval_correct == reference.outcomes[-1].eval_correct


def test_a_stage_trainer_reads_only_its_own_stage_state() -> None:
    spec, data = _pipeline_job(steps=1)
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    job = job_state(spec, root)
    stage_roots = [ex._stages.stage_root(job, s) for s in range(3)]
    trainer = make_executor(data)
    trainer.blobs.put(ex.blobs.get(root))  # type: ignore[arg-type]
    trainer.blobs.put(ex.blobs.get(stage_roots[0]))  # type: ignore[arg-type]
    unit = trainer.train_stage(job, 0, ())  # F_0 of shard 0
    assert unit.links is not None and unit.links.stage_root == stage_roots[0]
    assert not trainer.blobs.has(stage_roots[1]) and not trainer.blobs.has(stage_roots[2])


def test_stage_units_never_build_the_whole_model_and_give_storage_to_their_own_range_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, data = _pipeline_job(steps=1)
    ex = make_executor(data)
    job = job_state(spec, ex.initial_model_root(spec))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage unit built the whole model")

    monkeypatch.setattr(executor_module, "build_model", refuse)
    seen: list[tuple[int, list[str]]] = []
    real = stage_unit.stage_parameters

    @contextlib.contextmanager
    def spy(model: torch.nn.Module, *args: Any) -> Iterator[dict[str, torch.nn.Parameter]]:
        with real(model, *args) as params:
            seen.append((args[1], [n for n, p in model.named_parameters() if not p.is_meta]))
            yield params
        assert all(p.is_meta for p in model.parameters())  # the range's storage is handed back

    monkeypatch.setattr(stage_unit, "stage_parameters", spy)
    subs = _train_step(ex, job)
    assert check_unit(ex, job, subs[3], (0,)).failure == FAILURE_NONE
    skeleton = build_model_skeleton(spec.model, dtype=torch.float32)
    for s, real_names in seen:
        assert real_names == list(stage_parameter_names(skeleton, spec, s)), s
    assert {s for s, _ in seen} == {0, 1, 2}


def _one_step(micro: int = 2) -> tuple[TorchExecutor, JobState, list[WorkSubmission]]:
    spec, data = _pipeline_job(micro, steps=1)
    ex = make_executor(data)
    job = job_state(spec, ex.initial_model_root(spec))
    return ex, job, _train_step(ex, job)


def test_a_forged_stage_output_fails_its_replay_and_the_failure_is_upheld() -> None:
    ex, job, subs = _one_step()
    forward = subs[0]  # F_0 of shard 0
    acts = decode_bundle(ex.blobs.get(forward.result_digest))  # type: ignore[arg-type]
    forged = ex.blobs.put(encode_bundle({n: torch.zeros_like(t) for n, t in acts.items()}))
    bad = dataclasses.replace(forward, result_digest=forged)
    result = check_unit(ex, job, bad, (0,))
    assert result.failure == FAILURE_REPLAY and result.observed_digest == forward.result_digest
    assert ex.recheck(job, bad, verdict_for(bad, result, (0,)))
    assert not ex.recheck(job, forward, verdict_for(forward, result, (0,)))

    last = next(s for s in subs if pipeline.has_loss(job.spec, s.shard))
    wrong_loss = dataclasses.replace(last, losses=(last.losses[0] ^ 1,))
    assert check_unit(ex, job, wrong_loss, (0,)).failure == FAILURE_REPLAY
    # The handed-on gradient is bound into the claimed digest: replacing it alone is caught too.
    assert last.links is not None and last.links.output_gradient is not None
    other = dataclasses.replace(last.links, output_gradient=subs[1].links.output_gradient or forged)  # type: ignore[union-attr]
    assert check_unit(ex, job, dataclasses.replace(last, links=other), (0,)).failure == FAILURE_REPLAY


def test_a_unit_on_the_wrong_stage_state_or_unreadable_inputs_is_malformed() -> None:
    ex, job, subs = _one_step()
    backward = subs[pipeline.units_per_shard(job.spec) - 1]  # B_0 of shard 0: reads the gradient handed to it
    assert backward.links is not None
    wrong_stage = dataclasses.replace(backward.links, stage_root=subs[1].links.stage_root)  # type: ignore[union-attr]
    not_acts = ex.blobs.put(encode_bundle({ACT_PREFIX + "0": torch.zeros(3)}))
    unreadable = dataclasses.replace(backward.links, inputs=(not_acts, *backward.links.inputs[1:]))
    for links in (wrong_stage, unreadable, None):
        sub = dataclasses.replace(backward, links=links)
        result = check_unit(ex, job, sub, (0,))
        assert result.failure == FAILURE_MALFORMED, links
        assert ex.recheck(job, sub, verdict_for(sub, result, (0,)))
    assert not ex.recheck(job, backward, verdict_for(backward, check_unit(ex, job, sub, (0,)), (0,)))


def test_a_pipeline_job_with_bounds_off_the_model_or_trained_whole_is_refused() -> None:
    spec, data = _pipeline_job()
    with pytest.raises(InvalidWork, match="layer"):
        make_executor(data).initial_model_root(dataclasses.replace(spec, pipeline=PipelineSpec((0, 1, 2), 1)))
    ex = make_executor(data)
    with pytest.raises(ValueError, match="train_stage"):
        ex.train_unit(job_state(spec, ex.initial_model_root(spec)), 0)


def test_a_pipeline_model_exports_whole_from_its_stage_bundles(tmp_path: Path) -> None:
    spec, data = _pipeline_job(steps=1)
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    path = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match="fetch"):
        export_model(spec, ex.blobs.get(root), path)  # type: ignore[arg-type]
    meta = export_model(spec, ex.blobs.get(root), path, ex._blob)  # type: ignore[arg-type]
    assert meta["model_root"] == root.hex()
    model, _ = load_exported(path)
    expected = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values(), strict=True))


def test_a_tolerance_job_passes_a_stage_unit_within_its_tolerance_and_fails_one_beyond() -> None:
    """The cross-profile path (``StageWork.compare``): a trainer on another profile rounds differently,
    so a stage unit passes by distance, for its result and for the gradient it hands on alike."""
    spec, data = _pipeline_job(steps=1)
    spec = dataclasses.replace(spec, verification=dataclasses.replace(spec.verification, tolerance="1e-3"))
    ex = make_executor(data)
    job = job_state(spec, ex.initial_model_root(spec))
    subs = _train_step(ex, job)
    forward = subs[0]  # F_0 of shard 0: its result is activations
    acts = decode_bundle(ex.blobs.get(forward.result_digest))  # type: ignore[arg-type]
    for scale, failure in ((1 + 1e-5, FAILURE_NONE), (1.1, FAILURE_REPLAY)):
        nudged = ex.blobs.put(encode_bundle({n: t * scale for n, t in acts.items()}))
        assert check_unit(ex, job, dataclasses.replace(forward, result_digest=nudged), (0,)).failure == failure, scale
    handing = next(s for s in subs if s.links is not None and s.links.output_gradient is not None)
    assert handing.links is not None and handing.links.output_gradient is not None
    grads = decode_bundle(ex.blobs.get(handing.links.output_gradient))  # type: ignore[arg-type]
    for scale, failure in ((1 + 1e-5, FAILURE_NONE), (1.1, FAILURE_REPLAY)):
        nudged = ex.blobs.put(encode_bundle({n: t * scale for n, t in grads.items()}))
        links = dataclasses.replace(handing.links, output_gradient=nudged)
        assert check_unit(ex, job, dataclasses.replace(handing, links=links), (0,)).failure == failure, scale
    assert check_unit(ex, job, forward, (0,)).failure == FAILURE_NONE


def test_the_stage_count_does_not_change_the_bits_and_the_micro_batch_count_does() -> None:
    """Cutting the model into stages runs the same kernels in the same order on the same values (a stage's
    backward from the handed-on gradient is the whole backward's, the optimizer is per parameter), so
    S stages train exactly what one does; splitting the batch into M micro-batches sums the gradient
    in another order, so M does change the bits (measured in docs/decisions.md, decision 27)."""
    base, data = digits_job(steps=4)
    base = dataclasses.replace(base, eval_every=1)

    def fingerprint(bounds: tuple[int, ...] | None, micro: int) -> list[tuple[int, int, int]]:
        spec = dataclasses.replace(base, pipeline=PipelineSpec(bounds, micro) if bounds else None)
        return [(o.train_loss, o.eval_loss, o.eval_correct) for o in run_reference(spec, data).outcomes]

    assert fingerprint((0, 1, 2, 3), 2) == fingerprint((0, 3), 2)
    assert fingerprint((0, 1, 3), 1) == fingerprint((0, 3), 1) == fingerprint(None, 1)
    # Same stages, so the same state layout: the roots say whether the bits are equal.
    roots = [run_reference(dataclasses.replace(base, pipeline=PipelineSpec((0, 3), m)), data).final_root for m in (1, 2)]
    assert roots[0] != roots[1]
