"""The full adversarial suite: ``python -m tests.adversarial.run [--only NAME ...] [--steps N]``.

Runs every scenario of ``scenarios.BYZANTINE`` in its own devnet and writes
``tests/adversarial/results/adversarial.json`` and ``.md`` (the table that
``docs/adversarial.md`` quotes). Not a test: it runs for many minutes.
``--only`` runs the named scenarios and merges their rows into the results
already there (each row keeps the date it was measured); ``--list`` prints
the scenario names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

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
    parser.add_argument("--list", action="store_true", help="print the scenario names and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(s.name for s in BYZANTINE))
        return
    unknown = set(args.only or ()) - {s.name for s in BYZANTINE}
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    chosen = [s for s in BYZANTINE if not args.only or s.name in args.only]
    if args.steps:
        chosen = [dataclasses.replace(s, steps=args.steps) for s in chosen]
    results: list[ScenarioResult] = []
    started = time.time()
    today = time.strftime("%Y-%m-%d", time.gmtime(started))
    with tempfile.TemporaryDirectory(prefix="tdml-adversarial-") as tmp:
        for i, s in enumerate(chosen):
            print(f"[{i + 1}/{len(chosen)}] {s.name} …", flush=True)
            r = run_scenario(s, Path(tmp) / f"s{i}")
            print(f"    {r.faults_committed} faulty acts, {r.faulty_caught} caught by {r.mechanisms}, "
                  f"{r.evidence_rechecked}/{r.evidence} evidence re-checks, {r.seconds}s, errors {r.errors}")
            results.append(r)
    RESULTS.mkdir(exist_ok=True)
    rows = _merged(_previous_rows() if args.only else {}, {r.scenario: {**r.as_row(), "date": today} for r in results})
    merged = [_result(row) for row in rows]
    honest = sum(r.honest_units for r in merged)
    accused = sum(r.honest_accused for r in merged)
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "honest_units_total": honest,
        "honest_units_accused": accused,
        "scenarios": rows,
    }
    (RESULTS / "adversarial.json").write_text(json.dumps(summary, indent=2))
    md = table(merged) + f"\nHonest units across the suite: {honest}; accused: {accused}.\n"
    (RESULTS / "adversarial.md").write_text(md)
    print(md)


def _previous_rows() -> dict[str, dict[str, Any]]:
    """The rows of the last results file by scenario, each with the date it was measured."""
    path = RESULTS / "adversarial.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    date = old.get("date", "")[:10]
    return {row["scenario"]: {"date": date, **row} for row in old.get("scenarios", [])}


def _merged(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The old rows with the new ones in their place, in the suite's order (rows of dropped scenarios last)."""
    rows = {**old, **new}
    order = [s.name for s in BYZANTINE if s.name in rows]
    return [rows[name] for name in order] + [row for name, row in rows.items() if name not in order]


def _result(row: dict[str, Any]) -> ScenarioResult:
    known = {f.name for f in dataclasses.fields(ScenarioResult)}
    return ScenarioResult(**{k: v for k, v in row.items() if k in known})


if __name__ == "__main__":
    main()
