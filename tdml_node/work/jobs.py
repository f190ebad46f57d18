"""Named job presets: a ``JobSpec`` and its dataset bytes, ready to submit or to run as a reference.

``digits-mlp`` is the default and the benchmarks' workload W (digits, MLP
64-128-128-10, SGD lr 0.05 momentum 0.9, global batch 256 over 4 shards, 300
steps). ``digits-mlp-local`` does the same amount of work as local SGD
(H = 4 inner steps, 75 outer steps, Nesterov outer SGD). ``digits-cnn`` and
``synthetic-mlp`` vary the model and the data; ``chars-transformer`` trains a
small character-level transformer on a text file. ``digits-mlp-pipeline``
(MLP 64-128-128-128-10, one layer per stage, 4 micro-batches, 100 steps) and
``chars-transformer-pipeline`` (embeddings, each block, head: 4 stages) train
their models in pipeline stages. ``digits-mlp-xprofile`` is
``digits-mlp`` verified with the calibrated tolerance ``XPROFILE_TOLERANCE``
instead of bit for bit, so trainers with another execution profile (another
thread count) can take its units.

Every preset uses this process's deterministic profile (float32, one
thread, CPU, this torch version), so the reference run and the devnet of the
same machine agree bit for bit. The digits presets record the standardisation
their dataset went through (``JobSpec.preprocessing``), so an exported model
takes raw pixels.

This module must never build a spec that ``consensus.transition.validate_job_spec``
would refuse: arguments sorted by name, decimals as text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from consensus.crypto import sha256
from consensus.types import (
    Amount,
    Decimal,
    DecimalArg,
    JobSpec,
    ModelSpec,
    OptimizerSpec,
    PipelineSpec,
    Preprocessing,
    ScheduleSpec,
    VerificationPolicy,
)
from tdml_node.work.datasets import (
    char_corpus_bundle,
    digits_bundle,
    digits_preprocessing,
    synthetic_bundle,
)
from tdml_node.work.models import make_model_spec
from tdml_node.work.profile import local_profile
from tdml_node.work.tensors import decode_bundle

DEFAULT_JOB = "digits-mlp"
CHARS_TEST_FRACTION = 0.1
"""Share of the text the ``chars-transformer`` preset holds out (its tail)."""


def optimizer_spec(name: str, **params: str) -> OptimizerSpec:
    """An optimizer spec with its hyperparameters in the canonical (sorted) order."""
    return OptimizerSpec(name=name, params=tuple(DecimalArg(k, Decimal(v)) for k, v in sorted(params.items())))


CONSTANT = ScheduleSpec(name="constant", warmup_steps=0, final_fraction=Decimal("1"))
EXACT = VerificationPolicy(checked_steps=1, checkers_per_unit=0, tolerance=Decimal("0"), unit_timeout_blocks=5)
XPROFILE_TOLERANCE = Decimal("1e-5")
"""Relative replay distance ``digits-mlp`` tolerates across execution profiles.

Calibrated by ``benchmarks/calibrate_tolerance.py`` (figures in
``benchmarks/results/tolerance.md`` and ``docs/verification.md``): 100 × the
largest distance between a 2-thread trainer and a 1-thread validator over
1200 honest units (9.35e-8), rounded up to a power of ten.
"""


def make_job(
    name: str,
    *,
    dataset: bytes,
    model: ModelSpec,
    optimizer: OptimizerSpec,
    task: str = "classification",
    seq_len: int = 0,
    outer_optimizer: OptimizerSpec | None = None,
    schedule: ScheduleSpec = CONSTANT,
    global_batch: int = 256,
    shards: int = 4,
    inner_steps: int = 1,
    steps: int = 300,
    seed: int = 0,
    eval_every: int = 10,
    verification: VerificationPolicy = EXACT,
    preprocessing: Preprocessing | None = None,
    pipeline: PipelineSpec | None = None,
) -> JobSpec:
    """A job spec with the presets' defaults (local profile, exact verification, rewards 10 and 2)."""
    return JobSpec(
        name=name,
        task=task,
        model=model,
        dataset=sha256(dataset),
        seq_len=seq_len,
        loss="cross_entropy",
        optimizer=optimizer,
        outer_optimizer=outer_optimizer,
        schedule=schedule,
        global_batch=global_batch,
        shards=shards,
        inner_steps=inner_steps,
        steps=steps,
        seed=seed,
        eval_every=eval_every,
        profile=local_profile(),
        verification=verification,
        reward_per_unit=Amount(10),
        reward_per_verdict=Amount(2),
        preprocessing=preprocessing,
        pipeline=pipeline,
    )


@lru_cache(maxsize=1)
def _digits() -> bytes:
    return digits_bundle()


@lru_cache(maxsize=1)
def _digits_pre() -> Preprocessing:
    return digits_preprocessing()


@lru_cache(maxsize=1)
def _synthetic() -> bytes:
    return synthetic_bundle()


def _digits_mlp(text_path: Path | None) -> tuple[JobSpec, bytes]:
    data = _digits()
    return make_job(
        "digits-mlp",
        dataset=data,
        preprocessing=_digits_pre(),
        model=make_model_spec("mlp", in_dim=64, hidden=128, layers=2, classes=10),
        optimizer=optimizer_spec("sgd", lr="0.05", momentum="0.9"),
    ), data


def _digits_mlp_xprofile(text_path: Path | None) -> tuple[JobSpec, bytes]:
    spec, data = _digits_mlp(text_path)
    verification = dataclasses.replace(spec.verification, tolerance=XPROFILE_TOLERANCE)
    return dataclasses.replace(spec, name="digits-mlp-xprofile", verification=verification), data


def _digits_mlp_local(text_path: Path | None) -> tuple[JobSpec, bytes]:
    data = _digits()
    return make_job(
        "digits-mlp-local",
        dataset=data,
        preprocessing=_digits_pre(),
        model=make_model_spec("mlp", in_dim=64, hidden=128, layers=2, classes=10),
        optimizer=optimizer_spec("sgd", lr="0.05"),
        outer_optimizer=optimizer_spec("sgd", lr="0.7", momentum="0.9", nesterov="1"),
        inner_steps=4,
        steps=75,
        eval_every=5,
    ), data


def _digits_mlp_pipeline(text_path: Path | None) -> tuple[JobSpec, bytes]:
    spec, data = _digits_mlp(text_path)
    return dataclasses.replace(
        spec,
        name="digits-mlp-pipeline",
        model=make_model_spec("mlp", in_dim=64, hidden=128, layers=3, classes=10),
        pipeline=PipelineSpec((0, 1, 2, 3, 4), 4),
        steps=100,
        eval_every=20,
    ), data


def _digits_cnn(text_path: Path | None) -> tuple[JobSpec, bytes]:
    data = _digits()
    return make_job(
        "digits-cnn",
        dataset=data,
        preprocessing=_digits_pre(),
        model=make_model_spec("cnn", side=8, channels=16, classes=10),
        optimizer=optimizer_spec("sgd", lr="0.05", momentum="0.9"),
    ), data


def _synthetic_mlp(text_path: Path | None) -> tuple[JobSpec, bytes]:
    data = _synthetic()
    return make_job(
        "synthetic-mlp",
        dataset=data,
        model=make_model_spec("mlp", in_dim=32, hidden=64, layers=2, classes=4),
        optimizer=optimizer_spec("sgd", lr="0.05", momentum="0.9"),
        steps=200,
    ), data


def _chars_transformer(text_path: Path | None) -> tuple[JobSpec, bytes]:
    if text_path is None:
        raise ValueError("the chars-transformer job needs a text file (text_path)")
    return chars_transformer(Path(text_path).read_text(encoding="utf-8"))


def _chars_transformer_pipeline(text_path: Path | None) -> tuple[JobSpec, bytes]:
    if text_path is None:
        raise ValueError("the chars-transformer-pipeline job needs a text file (text_path)")
    return chars_transformer_pipeline(Path(text_path).read_text(encoding="utf-8"))


def chars_transformer_pipeline(text: str) -> tuple[JobSpec, bytes]:
    """``chars-transformer`` in four stages: the embeddings, each of the two blocks, then ln_f and the head."""
    spec, data = chars_transformer(text)
    return dataclasses.replace(spec, name="chars-transformer-pipeline", pipeline=PipelineSpec((0, 1, 2, 3, 4), 2)), data


def chars_transformer(text: str) -> tuple[JobSpec, bytes]:
    """The ``chars-transformer`` preset on the given text (its vocabulary sets the model's ``vocab``)."""
    data = char_corpus_bundle(text, CHARS_TEST_FRACTION)
    vocab = int(decode_bundle(data)["vocab"].shape[0])
    return make_job(
        "chars-transformer",
        dataset=data,
        task="char_lm",
        seq_len=64,
        model=make_model_spec("char_transformer", vocab=vocab, ctx=64, d_model=64, n_layer=2, n_head=4),
        optimizer=optimizer_spec("adamw", lr="0.003", weight_decay="0.01"),
        schedule=ScheduleSpec(name="linear", warmup_steps=20, final_fraction=Decimal("0.1")),
        global_batch=32,
        steps=300,
        eval_every=25,
    ), data


_PRESETS: dict[str, Callable[[Path | None], tuple[JobSpec, bytes]]] = {
    "digits-mlp": _digits_mlp,
    "digits-mlp-xprofile": _digits_mlp_xprofile,
    "digits-mlp-local": _digits_mlp_local,
    "digits-mlp-pipeline": _digits_mlp_pipeline,
    "digits-cnn": _digits_cnn,
    "synthetic-mlp": _synthetic_mlp,
    "chars-transformer": _chars_transformer,
    "chars-transformer-pipeline": _chars_transformer_pipeline,
}


def text_presets() -> dict[str, Callable[[str], tuple[JobSpec, bytes]]]:
    """The presets whose dataset is a text file the user gives, by name."""
    return {"chars-transformer": chars_transformer, "chars-transformer-pipeline": chars_transformer_pipeline}


def job_names() -> tuple[str, ...]:
    return tuple(_PRESETS)


def preset_spec(name: str) -> JobSpec | None:
    """The preset's whole spec as it would be submitted; None for a preset that needs a text file."""
    try:
        return get_job(name)[0]
    except ValueError:
        if name in _PRESETS:
            return None
        raise


def get_job(name: str = DEFAULT_JOB, *, steps: int | None = None, text_path: str | Path | None = None) -> tuple[JobSpec, bytes]:
    """The preset's spec (with ``steps`` replacing its step count when given) and dataset bytes."""
    build = _PRESETS.get(name)
    if build is None:
        raise ValueError(f"unknown job {name!r}; presets: {', '.join(job_names())}")
    spec, data = build(Path(text_path) if text_path is not None else None)
    if steps is not None:
        if steps < 1:
            raise ValueError("a job needs at least one step")
        spec = dataclasses.replace(spec, steps=steps)
    return spec, data
