"""What verification by replay costs beside training, per inner step and per work unit.

For each job preset (``digits-mlp`` with H = 1, ``digits-mlp-local`` with
H = 4, ``digits-cnn``, and ``chars-transformer`` on a small generated text)
one in-process executor trains units (``train_unit``), replays single inner
steps of them (``replay_step``, what a checker runs per sampled step) and runs
the whole checker's procedure (``check_unit`` with the steps the protocol's
sampler picks from a real sample signature). Reported: training time per
inner step (unit time ÷ H), replay time per inner step, their ratio, the
policy's share of steps checked (c / H), and the measured verification cost of
a unit (check time ÷ training time), which is what a checker pays per unit
relative to the trainer. The baseline of a replayed step is the trained step
of the same job, in the same repeat.

This module must never assert on a timing or write outside a temporary directory.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import BenchResult, Settings, executor_for, job_state
from consensus.crypto import Keypair
from consensus.types import Hash32, JobSpec, JobState, WorkSubmission
from consensus.work import TrainedUnit, check_unit, sample_for
from tdml_node.work.jobs import get_job

NAME = "replay_cost"
TITLE = "Replay (verification) vs training, per inner step and per unit"

CHAIN_ID = "tdml-bench"
TEXT_CHARS = 40_000

# Units per repeat: (full, quick).
UNITS = {
    "digits-mlp": (60, 8),
    "digits-mlp-local": (24, 4),
    "digits-cnn": (24, 4),
    "chars-transformer": (24, 4),
}

_WORDS = (
    "the of and to in is was that for on as with by he it at from his an were are which this be "
    "or had not but first one their its new after who they have her she two been other when there "
    "all during into school time may years more most only over city some world would where later "
    "up such used many can state about national out known university united then made"
).split()


def generated_text(chars: int, seed: int = 0) -> str:
    """Plausible English-like text: seeded random words in sentences of 6 to 18 words."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < chars:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        sentence = " ".join(words).capitalize() + ". "
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)[:chars]


def measure_job(spec: JobSpec, dataset: bytes, units: int) -> tuple[float, float, float]:
    """(train seconds per unit, replay seconds per inner step, check_unit seconds per unit), wall.

    Units are trained at successive steps from the same model state (so each
    reads other samples), shards round-robin; then one inner step of each is
    replayed (inner steps round-robin), then each is checked as a designated
    checker would. An untimed pass over the same units comes first.
    """
    executor = executor_for(dataset, warm=True)
    trainer = Keypair.from_seed(bytes(range(32)))
    checker = Keypair.from_seed(bytes(range(1, 33)))
    root: Hash32 = executor.initial_model_root(spec)
    h = spec.inner_steps

    jobs = [job_state(spec, root, i) for i in range(units)]
    # An untimed pass first: loads the dataset, builds the model and computes the
    # sample permutations of the epochs these steps read, so both timed passes
    # below find the same warm caches.
    for i, job in enumerate(jobs):
        warm = executor.train_unit(job, i % spec.shards)
        executor.replay_step(job, _submission(job, i % spec.shards, trainer, warm), 0)

    subs: list[WorkSubmission] = []
    started = time.perf_counter()
    for i, job in enumerate(jobs):
        unit = executor.train_unit(job, i % spec.shards)
        subs.append(_submission(job, i % spec.shards, trainer, unit))
    train = (time.perf_counter() - started) / units

    started = time.perf_counter()
    for i, (job, sub) in enumerate(zip(jobs, subs, strict=True)):
        executor.replay_step(job, sub, i % h)
    replay = (time.perf_counter() - started) / units

    samples = [sample_for(checker, CHAIN_ID, job, sub)[1] for job, sub in zip(jobs, subs, strict=True)]
    started = time.perf_counter()
    for job, sub, steps in zip(jobs, subs, samples, strict=True):
        check_unit(executor, job, sub, steps)
    check = (time.perf_counter() - started) / units
    return train, replay, check


def _submission(job: JobState, shard: int, trainer: Keypair, unit: TrainedUnit) -> WorkSubmission:
    """The submission the trainer of ``unit`` gossips."""
    return WorkSubmission(
        job=job.job_id,
        step=job.step,
        shard=shard,
        trainer=trainer.public_key,
        parent_model_root=job.model_root,
        checkpoint_digests=unit.checkpoint_digests,
        result_digest=unit.result_digest,
        losses=unit.losses,
        receipt=unit.receipt,
    )


def run(settings: Settings) -> BenchResult:
    repeats = settings.repeats_for(5, 2)
    res = BenchResult(NAME, TITLE, repeats)
    tmp = Path(tempfile.mkdtemp(prefix="tdml-bench-replay-"))
    try:
        text_path = tmp / "corpus.txt"
        text_path.write_text(generated_text(TEXT_CHARS), encoding="utf-8")
        jobs = {name: get_job(name, text_path=text_path) for name in UNITS}
        for name, (spec, dataset) in jobs.items():
            h = spec.inner_steps
            c = spec.verification.checked_steps
            units = settings.pick(*UNITS[name])
            step_row = res.row(f"{name}: replay_step, per inner step", "ms", baseline_label="train_unit ÷ H (trained inner step)")
            unit_row = res.row(f"{name}: check_unit (c={c} of H={h}), per unit", "ms", baseline_label="train_unit, per unit")
            for _ in range(repeats):
                train, replay, check = measure_job(spec, dataset, units)
                step_row.add(replay * 1e3, train / h * 1e3)
                unit_row.add(check * 1e3, train * 1e3)
            res.facts[f"{name}: H, c, c/H (policy's share of inner steps replayed)"] = f"H={h}, c={c}, c/H={c / h:.3g}"
            res.facts[f"{name}: K shards, samples per inner step"] = f"K={spec.shards}, {spec.global_batch // spec.shards}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res.notes = [
        "One executor in one process trains and checks (as a one-node chain does), on one thread, "
        "with the jobs' deterministic profile; times are wall-clock per call, averaged over the units of a repeat.",
        "Replay of an H = 1 unit recomputes the gradient and hashes the result bundle; replay of inner step i of an "
        "H > 1 unit loads checkpoint i (θ0 for i = 0), takes one optimizer step and hashes the new checkpoint; "
        "check_unit adds the result-vs-final-checkpoint check for H > 1.",
        "ours ÷ baseline of the check_unit row is the verification cost of one unit relative to training it; "
        "the policy alone would predict about c/H.",
        f"chars-transformer trains on {TEXT_CHARS:,} characters of seeded random English words (no file ships with the project).",
    ]
    return res
