"""The network benchmarks' markdown, and the previous full run's raw figures that a full run keeps.

``render_markdown`` turns the JSON document into ``network.md``: the machine,
each section through ``benchmarks.run_all.section_lines``, and, after a full
run that replaced another, a table of both runs' repeats together.
``previous_run`` reads the figures of the run a new full run replaces.

This module must never measure anything or write a file: ``__main__`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import summarize
from benchmarks.run_all import cell, section_lines


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Network benchmarks",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable, {m['cpu_model']}), {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in m['load_average_at_start'])}, at the end "
        f"{', '.join(f'{v:.2f}' for v in doc['load_average_at_end'])}. Run {m['date']}, {doc['seconds']:.0f} s"
        f"{' (quick smoke run)' if doc.get('quick') else ''}.",
        "",
        "Each figure is the median of its repeats with (min – max); a ratio is ours ÷ baseline, taken per repeat "
        "(both measured in the same repeat), then its median (min – max). The machine is shared and noisy "
        "(other test suites ran beside this one: see the load averages of each measurement).",
    ]
    previous = doc.get("previous_run")
    for name, section in doc["benchmarks"].items():
        lines += section_lines(name, section)
    if previous:
        lines += _combined_lines(doc, previous)
    return "\n".join(lines) + "\n"


def previous_run(path: Path) -> dict[str, Any] | None:
    """The raw figures of the full run whose results are about to be replaced, to combine with the new ones."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if old.get("quick") or "benchmarks" not in old:
        return None
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, section in old["benchmarks"].items():
        rows[name] = [
            {"label": r["label"], "baseline_label": r.get("baseline_label"), "ours": r["ours"]["runs"],
             **({"baseline": r["baseline"]["runs"], "ratio": r["ratio_ours_over_baseline"]["runs"]}
                if "ratio_ours_over_baseline" in r else {})}
            for r in section.get("rows", [])
        ]
    return {"date": old.get("machine", {}).get("date", "?"), "seconds": old.get("seconds"), "rows": rows}


def _combined_lines(doc: dict[str, Any], previous: dict[str, Any]) -> list[str]:
    """A table of every row over the repeats of this run and of the previous full run together."""
    lines = [
        "", f"## Both full runs together (this one and {previous['date']})", "",
        "Median (min – max) over the repeats of both runs; ratios are still taken within each repeat.", "",
        "| section | figure | unit | ours | baseline | baseline figure | ours ÷ baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, section in doc["benchmarks"].items():
        earlier = {(r["label"], r.get("baseline_label")): r for r in previous["rows"].get(name, [])}
        for row in section["rows"]:
            old = earlier.get((row["label"], row.get("baseline_label")))
            if old is None:
                continue
            ours = summarize(old["ours"] + row["ours"]["runs"])
            base = ratio = None
            if "ratio" in old and "ratio_ours_over_baseline" in row:
                base = summarize(old["baseline"] + row["baseline"]["runs"])
                ratio = summarize(old["ratio"] + row["ratio_ours_over_baseline"]["runs"])
            lines.append(f"| {name} | {row['label']} | {row['unit']} | {cell(ours)} | "
                         f"{row.get('baseline_label') or ''} | {cell(base)} | {cell(ratio, '×')} |")
    return lines
