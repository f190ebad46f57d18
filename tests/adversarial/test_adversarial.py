"""The adversarial suite in its reduced CI form: a few behaviours, short jobs, the same checks.

The full suite is ``python -m tests.adversarial.run`` (every behaviour); its
table is in docs/adversarial.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.adversarial.harness import run_scenario
from tests.adversarial.scenarios import CI_PIPELINE, CI_SUBSET, by_name

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [*CI_SUBSET, *CI_PIPELINE])
def test_behaviour_is_caught_with_rechecked_evidence(tmp_path: Path, name: str) -> None:
    scenario = by_name(name) if name in CI_PIPELINE else dataclasses.replace(by_name(name), steps=30)
    r = run_scenario(scenario, tmp_path)
    assert not r.errors, r.errors
    assert r.faults_committed >= 1, "the Byzantine node never misbehaved"
    assert r.faulty_caught >= 1 and r.offenders_slashed == len(scenario.behaviours)
    assert r.evidence_rechecked == r.evidence >= 1
    assert r.honest_accused == 0
    assert r.job_done and r.equals_reference
