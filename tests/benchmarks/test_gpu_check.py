"""``benchmarks.gpu_check`` on the CPU: its checks run and find equal bits; without CUDA it exits 0 and writes nothing.

The GPU figures themselves come from running the script on a GPU machine;
these tests only make sure that run cannot fail on the script's own logic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import gpu_check
from consensus import pipeline
from tdml_node.storage import MemoryBlobStore
from tdml_node.work.jobs import get_job
from tdml_node.work.tensors import encode_bundle

JOBS = (*gpu_check.WHOLE_JOBS, gpu_check.PIPELINE_JOB)


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both checks of every job on the CPU, one step, with a calibration file of our own."""
    calibration = tmp_path_factory.mktemp("calibration") / "tolerance.json"
    calibration.write_text(json.dumps({"jobs": {"digits-cnn": {"tolerance": "1e-3"}}}), encoding="utf-8")
    return gpu_check.measure("cpu", 1, calibration)


def test_step_0_trained_twice_reports_equal_bits_for_every_unit(doc: dict[str, Any]) -> None:
    shards = get_job(gpu_check.WHOLE_JOBS[0])[0].shards
    expected = {**dict.fromkeys(gpu_check.WHOLE_JOBS, shards),
                gpu_check.PIPELINE_JOB: pipeline.units_per_step(get_job(gpu_check.PIPELINE_JOB)[0])}
    assert doc["repeat"] == {n: {"units": expected[n], "bit_identical": expected[n], "equal": True} for n in JOBS}


def test_a_trainer_on_the_validators_device_differs_by_nothing_and_passes_the_job_tolerance(doc: dict[str, Any]) -> None:
    cross = doc["cross"]
    assert set(cross) == set(JOBS)
    for name, c in cross.items():
        assert "error" not in c, c
        assert c["bit_identical"] == c["units"] > 0, name
        assert c["max_abs"] == c["max_rel"] == c["max_distance"] == 0.0, name
    # The job's own tolerance, else the calibration file's; the pipeline preset has neither.
    assert [cross[n]["tolerance"] for n in JOBS] == ["1e-5", "1e-3", None]
    assert cross["digits-mlp-xprofile"]["within"] == cross["digits-mlp-xprofile"]["units"]
    assert cross["digits-cnn"]["within"] == cross["digits-cnn"]["units"]
    assert cross[gpu_check.PIPELINE_JOB]["within"] is None


def test_the_figures_render_and_serialise_errors_too(doc: dict[str, Any]) -> None:
    failed = {"error": "RuntimeError: no deterministic kernel"}
    full = {"repeat": {**doc["repeat"], "boom": failed}, "cross": {**doc["cross"], "boom": failed}, "machine": {"cpus_usable": 1, "cpu_model": "x", "torch": "t", "date": "d"},
            "gpu": {"name": "none", "cuda": None, "cudnn": None}, "seconds": 0.0}
    markdown = gpu_check.render_markdown(full)
    for name in (*JOBS, "boom"):
        assert markdown.count(f"| {name} |") == 2
    assert markdown.count("no deterministic kernel") == 2
    json.dumps(full, default=str)


def test_tensor_diff_gives_the_largest_absolute_and_scaled_difference() -> None:
    blobs = MemoryBlobStore()
    a = blobs.put(encode_bundle({"w": torch.tensor([1.0, -4.0]), "b": torch.tensor([0.5])}))
    b = blobs.put(encode_bundle({"w": torch.tensor([1.0, -3.0]), "b": torch.tensor([0.5])}))
    assert gpu_check.tensor_diff(blobs, a, b) == (1.0, 1.0 / 3.0)
    assert gpu_check.tensor_diff(blobs, a, a) == (0.0, 0.0)


def test_a_job_that_raises_is_recorded_with_its_error() -> None:
    assert gpu_check.guarded(lambda: {"n": 1 // 0}) == {"error": "ZeroDivisionError: integer division or modulo by zero"}


def test_without_cuda_it_says_so_exits_0_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "results"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()
