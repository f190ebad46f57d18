"""Job presets: valid specs the chain accepts, the default workload W, the steps override."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.crypto import sha256
from consensus.transition import validate_job_spec
from tdml_node.work.executor import validate_spec
from tdml_node.work.jobs import DEFAULT_JOB, get_job, job_names
from tdml_node.work.models import model_args


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be, that is the question\n" * 40, encoding="utf-8")
    return path


def test_every_preset_is_a_valid_job(text_file: Path) -> None:
    assert DEFAULT_JOB == "digits-mlp"
    for name in job_names():
        spec, data = get_job(name, text_path=text_file)
        validate_job_spec(spec)
        validate_spec(spec)
        assert spec.name == name
        assert spec.dataset == sha256(data)


def test_default_job_is_workload_w() -> None:
    spec, _ = get_job()
    assert spec.model.name == "mlp"
    assert model_args(spec.model) == {"classes": 10, "hidden": 128, "in_dim": 64, "layers": 2}
    assert (spec.global_batch, spec.shards, spec.inner_steps, spec.steps, spec.seed) == (256, 4, 1, 300, 0)
    assert spec.optimizer.name == "sgd"
    assert {p.name: p.value for p in spec.optimizer.params} == {"lr": "0.05", "momentum": "0.9"}
    assert spec.profile.threads == 1 and spec.profile.dtype == "float32"
    assert spec.verification.tolerance == "0"


def test_local_preset_does_the_same_amount_of_work() -> None:
    w, _ = get_job("digits-mlp")
    local, _ = get_job("digits-mlp-local")
    assert local.inner_steps == 4 and local.outer_optimizer is not None
    assert local.steps * local.inner_steps * local.global_batch == w.steps * w.global_batch


def test_steps_override_and_errors() -> None:
    spec, _ = get_job("digits-mlp", steps=7)
    assert spec.steps == 7
    with pytest.raises(ValueError, match="unknown job"):
        get_job("nope")
    with pytest.raises(ValueError, match="text"):
        get_job("chars-transformer")
