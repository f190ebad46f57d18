"""The full adversarial suite: ``python -m tests.adversarial.run [--only NAME ...] [--steps N]``.

Runs every scenario of ``scenarios.BYZANTINE`` in its own devnet and writes
``tests/adversarial/results/adversarial.json`` and ``.md`` (the table that
``docs/adversarial.md`` quotes). Not a test: it runs for many minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

from tests.adversarial.harness import ScenarioResult, run_scenario
from tests.adversarial.scenarios import BYZANTINE

RESULTS = Path(__file__).parent / "results"


def table(results: list[ScenarioResult]) -> str:
    head = (
        "| behaviour | faulty acts | caught | by | blocks to catch | evidence re-checks | offender slashed "
        "/ banned | shards reassigned | job done | final = reference | honest units | honest accused |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        rows.append(
            f"| {r.scenario} | {r.faults_committed} | {r.faulty_caught} | {'; '.join(r.mechanisms) or '-'} "
            f"| {r.blocks_to_catch if r.blocks_to_catch is not None else '-'} "
            f"| {r.evidence_rechecked}/{r.evidence} | {r.offenders_slashed} / {r.offenders_banned} "
            f"| {r.offender_shards_reassigned} | {'yes' if r.job_done else 'NO'} "
            f"| {'yes' if r.equals_reference else 'no'} | {r.honest_units} | {r.honest_accused} |"
        )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    parser.add_argument("--steps", type=int, help="override every scenario's step count")
    args = parser.parse_args()
    chosen = [s for s in BYZANTINE if not args.only or s.name in args.only]
    if args.steps:
        chosen = [dataclasses.replace(s, steps=args.steps) for s in chosen]
    results: list[ScenarioResult] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tdml-adversarial-") as tmp:
        for i, s in enumerate(chosen):
            print(f"[{i + 1}/{len(chosen)}] {s.name} …", flush=True)
            r = run_scenario(s, Path(tmp) / f"s{i}")
            print(f"    {r.faults_committed} faulty acts, {r.faulty_caught} caught by {r.mechanisms}, "
                  f"{r.evidence_rechecked}/{r.evidence} evidence re-checks, {r.seconds}s, errors {r.errors}")
            results.append(r)
    RESULTS.mkdir(exist_ok=True)
    honest = sum(r.honest_units for r in results)
    accused = sum(r.honest_accused for r in results)
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "honest_units_total": honest,
        "honest_units_accused": accused,
        "scenarios": [r.as_row() for r in results],
    }
    (RESULTS / "adversarial.json").write_text(json.dumps(summary, indent=2))
    md = table(results) + f"\nHonest units across the suite: {honest}; accused: {accused}.\n"
    (RESULTS / "adversarial.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
