"""Crash and fault injection in its reduced CI form: one short campaign on four real processes.

The full campaigns (over a hundred SIGKILLs) are ``python -m tests.adversarial.faults``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.adversarial.faults import run_campaign

pytestmark = pytest.mark.slow


def test_kills_pauses_and_partitions_lose_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("TDML_FAULT_SEED", random.randrange(1 << 30)))
    r = run_campaign(tmp_path, seed=seed, kills=3, steps=150, pauses=1, partitions=1)
    assert r.ok, f"seed {seed}: {r}"
