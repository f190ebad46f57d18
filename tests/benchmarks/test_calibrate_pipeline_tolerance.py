"""The pipeline tolerance calibration measures every unit and reports what it measured, on a tiny run.

One step of ``digits-mlp-pipeline`` in-process (seconds): the shape
of what is measured and written, never its timings or its exact distances,
which depend on the CPU.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from benchmarks import calibrate_pipeline_tolerance as cpt
from benchmarks.calibrate_tolerance import PROBE_TOLERANCE, SAFETY_FACTOR, with_tolerance
from consensus import pipeline
from tdml_node.work.profile import local_profile

JOB = "digits-mlp-pipeline"


def test_every_unit_of_a_step_is_measured_once_with_a_finite_distance_and_its_parts() -> None:
    spec, data = cpt.job_for(JOB)
    spec = with_tolerance(spec, PROBE_TOLERANCE)
    prun = cpt.honest_run(spec, data, 1, local_profile(threads=2))
    count = pipeline.units_per_step(spec)
    assert [m.honest.shard for m in prun.measured] == list(range(count))
    assert len(prun.run.roots) == 2 and prun.run.roots[1] != prun.run.roots[0]
    assert prun.part_mismatches == 0
    for m in prun.measured:
        assert math.isfinite(m.distance) and m.distance >= 0, m.kind
        assert m.distance == max(m.parts.values())
        assert all(math.isfinite(v) and v >= 0 for v in m.parts.values())
        assert (cpt.GRADIENT in m.parts) == pipeline.emits_gradient(spec, m.honest.shard)
        assert (cpt.LOSS in m.parts) == pipeline.has_loss(spec, m.honest.shard)
        assert m.kind == cpt.kind_of(spec, m.honest.shard)
    groups = cpt.by_kind(spec, prun.measured)
    assert list(groups) == cpt.unit_kinds(spec) and all(len(g) == spec.shards for g in groups.values())


def test_a_tiny_calibration_writes_a_power_of_ten_tolerance_no_false_accusation_and_catches_forgeries(
    tmp_path: Path,
) -> None:
    assert cpt.main(["--jobs", JOB, "--steps", "1", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "tolerance-pipeline.json").read_text(encoding="utf-8"))
    markdown = (tmp_path / "tolerance-pipeline.md").read_text(encoding="utf-8")
    j = doc["jobs"][JOB]
    spec, _ = cpt.job_for(JOB)
    assert j["steps_run"] == 1 and j["units"] == pipeline.units_per_step(spec)
    assert sum(k["units"] for k in j["by_kind"].values()) == j["units"]
    assert list(j["by_kind"]) == cpt.unit_kinds(spec)
    worst = j["honest_distance"]["distance"]["max"]
    assert math.isfinite(worst) and worst >= 0 and j["part_mismatches"] == 0
    assert re.fullmatch(r"1e-?\d+", j["tolerance"])
    assert float(j["tolerance"]) >= SAFETY_FACTOR * worst
    assert j["false_accusations"] == 0 and j["units_within_tolerance"] == j["units"]
    attacks = j["attacks"]
    for name in ("activations (forward units): zero", "parameter gradients (last and backward units): random (normal, same RMS)",
                 "handed-on gradient: zero", "another shard's outputs"):
        assert attacks[name]["tried"] > 0 and attacks[name]["caught"] == attacks[name]["tried"], name
    for name, a in attacks.items():
        if a["kind"] == "bisection":
            assert a["units"] and a["smallest_caught_max"] is not None, name
            # A perturbation of size ε moves a relative L2 distance by at most about ε, so what is caught is
            # of the tolerance's order, never of the honest rounding's.
            assert a["smallest_caught_min"] >= float(j["tolerance"]) / 100, name
    assert f"| {JOB} |" in markdown and f"`{j['tolerance']}`" in markdown
