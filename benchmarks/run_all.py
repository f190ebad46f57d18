"""Run the single-node benchmarks and write their figures: ``python -m benchmarks.run_all``.

Options: ``--quick`` (a fast smoke version of every benchmark), ``--only NAME
...`` (some of them), ``--repeats N`` (override every benchmark's repeat
count). A full run writes ``benchmarks/results/single_node.json`` and
``single_node.md``; ``--only`` replaces just the named benchmarks' sections of
those files; ``--quick`` writes ``single_node-quick.json`` / ``.md`` so a
smoke run never overwrites real figures. The markdown table is printed at the
end. A benchmark that fails is recorded with its error and the others still run.
``pipeline`` starts a 4-node devnet and 4 torch processes (minutes); run alone,
``python -m benchmarks.bench_pipeline`` writes its own ``pipeline.json`` / ``.md``.

This module must never assert on a timing, and never write outside
``benchmarks/results/`` (or the ``--out`` directory) except through the
benchmarks' own temporary directories.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BenchResult, Settings, machine_info, now_iso

BENCHMARKS: dict[str, str] = {
    "training_vs_plain": "benchmarks.bench_training_vs_plain",
    "replay_cost": "benchmarks.bench_replay_cost",
    "codec_and_signatures": "benchmarks.bench_codec_and_signatures",
    "commit_latency": "benchmarks.bench_commit_latency",
    "pipeline": "benchmarks.bench_pipeline",
}

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke version of every benchmark")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="repeats of every benchmark (default: each benchmark's own)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the result files")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def run_one(name: str, settings: Settings) -> dict[str, Any]:
    """Run one benchmark module; its JSON section, or an error section if it raised."""
    started = time.perf_counter()
    measured_at = now_iso()
    print(f"[bench] {name} …", file=sys.stderr, flush=True)
    try:
        module = importlib.import_module(BENCHMARKS[name])
        result: BenchResult = module.run(settings)
    except Exception as exc:
        seconds = time.perf_counter() - started
        print(f"[bench] {name} FAILED after {seconds:.1f}s: {exc!r}", file=sys.stderr, flush=True)
        return {"error": repr(exc), "traceback": traceback.format_exc(), "seconds": round(seconds, 2),
                "measured_at": measured_at}
    result.seconds = time.perf_counter() - started
    result.measured_at = measured_at
    print(f"[bench] {name} done in {result.seconds:.1f}s", file=sys.stderr, flush=True)
    return result.to_json()


# ---------------------------------------------------------------------------
# Markdown


def fmt(x: float) -> str:
    """A figure with about three significant digits and thousands separators."""
    if x != x:  # NaN
        return "n/a"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a == 0:
        return "0"
    return f"{x:.3g}"


def cell(summary: dict[str, Any] | None, suffix: str = "") -> str:
    if summary is None:
        return ""
    text = fmt(summary["median"]) + suffix
    if len(summary["runs"]) > 1:
        text += f" ({fmt(summary['min'])} – {fmt(summary['max'])})"
    return text


def fact_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, list):
        return ", ".join(fact_text(v) for v in value) if value else "-"
    if value is None:
        return "-"
    return str(value)


def section_lines(name: str, section: dict[str, Any]) -> list[str]:
    """One benchmark section in markdown: its table, then its facts and notes."""
    lines = ["", f"## {name}" + (f" — {section['title']}" if "title" in section else ""), ""]
    if "error" in section:
        return [*lines, f"FAILED: `{section['error']}` (measured {section['measured_at']})", ""]
    lines += [
        f"{section['repeats']} repeat(s), "
        + (f"{section['seconds']:.0f} s, " if section.get("seconds") else "")
        + f"measured {section['measured_at']}.",
        "",
        "| figure | unit | ours | baseline | baseline figure | ours ÷ baseline |",
        "|---|---|---|---|---|---|",
    ]
    for row in section["rows"]:
        mb = row.get("mb_per_s", {})
        ours = cell(row["ours"]) + (f"; {cell(mb['ours'], ' MB/s')}" if "ours" in mb else "")
        base = cell(row.get("baseline")) + (f"; {cell(mb['baseline'], ' MB/s')}" if "baseline" in mb else "")
        label = row["label"] + (f" ({row['note']})" if row.get("note") else "")
        lines.append(
            f"| {label} | {row['unit']} | {ours} | {row.get('baseline_label') or ''} | {base} | "
            f"{cell(row.get('ratio_ours_over_baseline'), '×')} |"
        )
    if section["facts"]:
        lines += ["", "Facts:", ""]
        lines += [f"- {key.replace('_', ' ')}: {fact_text(value)}" for key, value in section["facts"].items()]
    if section["notes"]:
        lines += ["", "Notes:", ""]
        lines += [f"- {note}" for note in section["notes"]]
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Single-node benchmarks",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable, {m['cpu_model']}), {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}, msgpack {m['msgpack']}, "
        f"pynacl {m['pynacl']}, plyvel {m['plyvel']}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in m['load_average_at_start'])}. Run {m['date']}"
        f"{' (quick smoke run)' if doc.get('quick') else ''}.",
        "",
        "Each figure is the median of its repeats with (min – max); a ratio is ours ÷ baseline, "
        "taken per repeat (both measured in the same repeat), then its median (min – max). "
        "The machine is shared and noisy: compare ratios rather than absolute figures.",
    ]
    for name, section in doc["benchmarks"].items():
        lines += section_lines(name, section)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(quick=args.quick, repeats=args.repeats)
    names = args.only or list(BENCHMARKS)
    stem = "single_node-quick" if args.quick else "single_node"
    out_dir: Path = args.out
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"

    started = time.perf_counter()
    doc: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "benchmarks": {}}
    if args.only and json_path.exists():
        # A partial run refreshes only its own sections of the earlier results.
        try:
            previous = json.loads(json_path.read_text())
            doc["benchmarks"] = dict(previous.get("benchmarks", {}))
        except (OSError, ValueError):
            pass
    for name in names:
        doc["benchmarks"][name] = run_one(name, settings)
    doc["benchmarks"] = {n: doc["benchmarks"][n] for n in BENCHMARKS if n in doc["benchmarks"]}
    doc["command"] = "python -m benchmarks.run_all " + " ".join(sys.argv[1:] if argv is None else argv)
    doc["seconds"] = round(time.perf_counter() - started, 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    markdown = render_markdown(doc)
    md_path.write_text(markdown)
    print(markdown)
    print(f"[bench] wrote {json_path} and {md_path} in {doc['seconds']:.0f}s", file=sys.stderr)
    return 1 if any("error" in doc["benchmarks"][n] for n in names) else 0


if __name__ == "__main__":
    sys.exit(main())
