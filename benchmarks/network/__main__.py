"""The command line: ``python -m benchmarks.network [--quick] [--repeats N] [--out DIR]``.

Runs ``runner.run``, writes ``network.json`` and ``network.md`` (or
``network-quick.*``) into ``--out`` (``benchmarks/results/`` by default) and
prints the markdown. A full run keeps the raw figures of the full run it
replaces under ``previous_run``.

This module must never write anything but those two files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchmarks.network as package
from benchmarks.common import Settings, machine_info, now_iso
from benchmarks.network.report import previous_run, render_markdown
from benchmarks.network.runner import run

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.network",
                                     description=(package.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (a few steps, short windows, one repeat)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="repeats (default 2, quick 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the result files")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(quick=args.quick, repeats=args.repeats)
    stem = "network-quick" if args.quick else "network"
    out_dir: Path = args.out
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    started = time.perf_counter()
    measured_at = now_iso()
    doc: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    sections = run(settings)
    for section in sections:
        section.measured_at = measured_at
    doc["benchmarks"] = {section.name: section.to_json() for section in sections}
    doc["command"] = "python -m benchmarks.network " + " ".join(sys.argv[1:] if argv is None else argv)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    doc["load_average_at_end"] = list(os.getloadavg())
    if not args.quick:
        doc["previous_run"] = previous_run(json_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    markdown = render_markdown(doc)
    md_path.write_text(markdown)
    print(markdown)
    print(f"[network] wrote {json_path} and {md_path} in {doc['seconds']:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
