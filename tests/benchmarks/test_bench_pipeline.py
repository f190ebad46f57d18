"""The pipeline benchmark's memory comparison measures what it says: one balanced range against the whole model."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_pipeline
from tdml_node.work.models import build_model_skeleton
from tdml_node.work.stage import stage_parameter_names


def test_the_wide_memory_model_cuts_into_four_stages_of_a_quarter_each() -> None:
    spec = bench_pipeline.memory_spec(bench_pipeline.WIDE_HIDDEN, whole=False)
    assert spec.pipeline is not None and len(spec.pipeline.layer_bounds) == 5
    model = build_model_skeleton(spec.model, dtype=torch.float32)
    sizes = dict(model.named_parameters())
    total = sum(p.numel() for p in sizes.values())
    shares = [sum(sizes[n].numel() for n in stage_parameter_names(model, spec, s)) / total for s in range(4)]
    assert all(abs(share - 0.25) < 0.01 for share in shares), shares
    whole = bench_pipeline.memory_spec(bench_pipeline.WIDE_HIDDEN, whole=True)
    assert whole.pipeline is not None and whole.pipeline.layer_bounds == (0, 6)


@pytest.mark.timeout(300)
def test_a_memory_probe_reports_a_stages_state_against_the_whole_models() -> None:
    got = bench_pipeline.measure_unit_memory([("stage1", 128), ("whole", 128)])
    stage, whole = got[("stage1", 128)], got[("whole", 128)]
    assert stage["stage_parameters"] == 16_512 and whole["stage_parameters"] == whole["model_parameters"] == 42_634
    assert stage["units"] == 2 and whole["units"] == 1
    assert 0 < stage["stage_bundle_bytes"] < whole["stage_bundle_bytes"]
    assert stage["rise_kib"] >= 0 and stage["input_bytes"] > 0 and whole["input_bytes"] == 0
