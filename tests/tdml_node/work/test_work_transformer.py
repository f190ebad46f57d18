"""The character transformer job: a few steps train, the loss falls, every unit replays."""

from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path

import pytest
from work_harness import job_state, make_executor, submission_for

from consensus.types import Decimal, ScheduleSpec
from consensus.work import PASSED, check_unit
from tdml_node.work.jobs import get_job
from tdml_node.work.models import make_model_spec
from tdml_node.work.reference import run_reference

WORDS = "the quick brown fox jumps over a lazy dog while small birds sing in green trees".split()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = random.Random(0)
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(1500)), encoding="utf-8")
    return path


def f32(bits: int) -> float:
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return value


def test_char_transformer_trains_and_replays(corpus: Path) -> None:
    spec, data = get_job("chars-transformer", text_path=corpus, steps=8)
    args = {a.name: a.value for a in spec.model.args}
    # Smaller than the preset so the test stays quick; the semantics are the same.
    spec = dataclasses.replace(
        spec,
        seq_len=16,
        eval_every=4,
        model=make_model_spec("char_transformer", vocab=args["vocab"], ctx=16, d_model=32, n_layer=2, n_head=4),
        global_batch=16,
        shards=2,
        schedule=ScheduleSpec("linear", warmup_steps=2, final_fraction=Decimal("0.5")),
    )
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    losses = []
    for step in range(spec.steps):
        job = job_state(spec, root, step)
        units = [ex.train_unit(job, k) for k in range(spec.shards)]
        validator = make_executor(data)
        validator.blobs.put(ex.blobs.get(root) or b"")
        if step in (0, spec.steps - 1):
            for k, unit in enumerate(units):
                assert check_unit(validator, job, submission_for(job, k, unit), [0]) == PASSED
        result = ex.step_outcome(job, tuple(u.result_digest for u in units))
        root, train, correct, total = result.model_root, result.train_loss, result.eval_correct, result.eval_total
        losses.append(f32(train))
    assert losses[-1] < losses[0] - 0.3
    assert total > 0 and 0 <= correct <= total
    assert run_reference(spec, data).final_root == root
