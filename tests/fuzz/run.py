"""The long fuzz run: ``python -m tests.fuzz.run --inputs 1000000 [--target T] [--seed S]``.

Inputs are split between the targets (for ``all``: 39% codec, 39% session,
20% RPC, 1% raw HTTP requests, 1% websocket frames, which wait on sockets)
and cut into chunks that run in worker processes (``--jobs``, default the
CPU count). Each RPC, HTTP and websocket chunk starts its own in-process node. The
command prints the count of every outcome class per target, prints every
failure with its seed, index and input in hex as soon as it is found, writes
a summary to ``tests/fuzz/results/fuzz_summary.json`` (``--out``), and exits
with status 1 when anything failed.

``--replay TARGET:INDEX`` regenerates one input of a run (same ``--seed``),
prints it and checks it again in this process, with the full traceback. RPC
inputs depend a little on the live node's state (nonces, heights), so their
replay rebuilds a close relative of the original; the printed hex is exact.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import ChunkResult, FuzzFailure, failure_from, rng_for

TARGETS = ("codec", "session", "rpc", "http", "ws", "sealed")
SHARES = {"codec": 0.37, "session": 0.37, "rpc": 0.2, "http": 0.01, "ws": 0.01, "sealed": 0.04}
CHUNK = {"codec": 25_000, "session": 25_000, "rpc": 50_000, "http": 10_000, "ws": 10_000, "sealed": 25_000}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "fuzz_summary.json"
RPC_INPUT_TIMEOUT = 30.0
MAX_SUMMARY_HEX = 20_000


def split_inputs(total: int, target: str) -> dict[str, int]:
    """How many inputs each target gets."""
    if target != "all":
        return {target: total}
    counts = {t: int(total * SHARES[t]) for t in TARGETS}
    counts["codec"] += total - sum(counts.values())
    return counts


def _report(result: ChunkResult, failure: Any) -> None:
    result.add_failure(failure)
    print(failure.describe(), file=sys.stderr, flush=True)


def _run_offline(target: Any, seed: int, start: int, count: int, check: Callable[[Any, Any], str]) -> ChunkResult:
    """Inputs of a target that needs no live node: its corpus, ``generate`` and ``check(corpus, input)``."""
    result = ChunkResult(target.TARGET)
    corpus = target.build_corpus(seed)
    started = time.perf_counter()
    for index in range(start, start + count):
        inp = target.generate(corpus, rng_for(seed, target.TARGET, index))
        try:
            result.outcomes[check(corpus, inp)] += 1
        except Exception as exc:
            _report(result, failure_from(exc, target.TARGET, seed, index, inp.data, inp.context()))
        result.inputs += 1
    result.seconds = time.perf_counter() - started
    return result


def run_codec(seed: int, start: int, count: int) -> ChunkResult:
    from . import target_codec as t

    return _run_offline(t, seed, start, count, lambda corpus, inp: t.check(inp))


def run_sealed(seed: int, start: int, count: int) -> ChunkResult:
    from . import target_sealed as t

    return _run_offline(t, seed, start, count, t.check)


def run_session(seed: int, start: int, count: int) -> ChunkResult:
    from . import target_session as t

    result = ChunkResult(t.TARGET)
    corpus = t.build_corpus(seed)
    started = time.perf_counter()
    for index in range(start, start + count):
        inp = t.generate(corpus, rng_for(seed, t.TARGET, index))
        try:
            result.outcomes[t.check(corpus, inp)] += 1
        except Exception as exc:
            _report(result, failure_from(exc, t.TARGET, seed, index, inp.frame, inp.context()))
            corpus.established = None  # start the next input from a clean session
        result.inputs += 1
    result.seconds = time.perf_counter() - started
    return result


async def run_rpc_async(seed: int, start: int, count: int) -> ChunkResult:
    from . import target_rpc as t

    result = ChunkResult(t.TARGET)
    async with t.live_node() as h:
        await t.wait_height(h, 1)
        h.start_height = h.node.state.height
        started = time.perf_counter()
        for index in range(start, start + count):
            inp = t.generate(h, rng_for(seed, t.TARGET, index))
            try:
                async with asyncio.timeout(RPC_INPUT_TIMEOUT):
                    result.outcomes[await t.check(h, inp)] += 1
            except TimeoutError:
                _report(result, failure_from(FuzzFailure("hang", f"no answer within {RPC_INPUT_TIMEOUT}s"), t.TARGET, seed, index, inp.body, inp.context()))
            except Exception as exc:
                _report(result, failure_from(exc, t.TARGET, seed, index, inp.body, inp.context()))
            result.inputs += 1
            if index % 500 == 0:
                t.remember_hashes(h)
            await asyncio.sleep(0)  # let the node's consensus run between requests
        result.seconds = time.perf_counter() - started
        try:
            await t.wait_height(h, h.start_height + 1)
            await h.stop()
            result.extra.update(t.check_final(h))
        except Exception as exc:
            _report(result, failure_from(exc, t.TARGET, seed, start + count, b"", "end-of-run checks"))
    return result


def run_rpc(seed: int, start: int, count: int) -> ChunkResult:
    return asyncio.run(run_rpc_async(seed, start, count))


async def run_socket_async(target: str, seed: int, start: int, count: int) -> ChunkResult:
    """Raw HTTP requests (``http``) or websocket frames (``ws``) to a listening server on a live node."""
    from . import target_http, target_ws

    result = ChunkResult(target)
    async with target_http.live_server() as h:
        started = time.perf_counter()
        for index in range(start, start + count):
            rng = rng_for(seed, target, index)
            inp = target_http.generate(h.seeds, rng) if target == "http" else target_ws.generate(rng)
            try:
                async with asyncio.timeout(RPC_INPUT_TIMEOUT):
                    if isinstance(inp, target_http.HttpInput):
                        result.outcomes[await target_http.check(h, inp)] += 1
                    else:
                        result.outcomes[await target_ws.check(h, inp)] += 1
            except TimeoutError:
                _report(result, failure_from(FuzzFailure("hang", f"no outcome within {RPC_INPUT_TIMEOUT}s"), target, seed, index, inp.data, inp.context()))
            except Exception as exc:
                _report(result, failure_from(exc, target, seed, index, inp.data, inp.context()))
            result.inputs += 1
        result.seconds = time.perf_counter() - started
        try:
            result.extra.update({f"{target}_{k}": v for k, v in (await target_http.check_final(h)).items()})
        except Exception as exc:
            _report(result, failure_from(exc, target, seed, start + count, b"", "end-of-run checks"))
    return result


def run_http(seed: int, start: int, count: int) -> ChunkResult:
    return asyncio.run(run_socket_async("http", seed, start, count))


def run_ws(seed: int, start: int, count: int) -> ChunkResult:
    return asyncio.run(run_socket_async("ws", seed, start, count))


RUNNERS = {
    "codec": run_codec, "session": run_session, "rpc": run_rpc, "http": run_http, "ws": run_ws, "sealed": run_sealed,
}


def run_chunk(target: str, seed: int, start: int, count: int) -> ChunkResult:
    """Run inputs ``start .. start+count-1`` of a target (the unit of work of a worker process)."""
    return RUNNERS[target](seed, start, count)


def plan(counts: dict[str, int]) -> list[tuple[str, int, int]]:
    """Chunks (target, start, count), longest-running first so two workers finish together."""
    chunks: list[tuple[str, int, int]] = []
    for target in ("rpc", "http", "ws", "session", "codec", "sealed"):
        total = counts.get(target, 0)
        for start in range(0, total, CHUNK[target]):
            chunks.append((target, start, min(CHUNK[target], total - start)))
    return chunks


def run_all(counts: dict[str, int], seed: int, jobs: int) -> tuple[dict[str, ChunkResult], float]:
    totals = {t: ChunkResult(t) for t in counts}
    chunks = plan(counts)
    started = time.perf_counter()
    if jobs <= 1:
        for target, start, count in chunks:
            totals[target].merge(run_chunk(target, seed, start, count))
            _progress(totals, counts, started)
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_chunk, target, seed, start, count): target for target, start, count in chunks}
            for future in concurrent.futures.as_completed(futures):
                totals[futures[future]].merge(future.result())
                _progress(totals, counts, started)
    return totals, time.perf_counter() - started


def _progress(totals: dict[str, ChunkResult], counts: dict[str, int], started: float) -> None:
    done = ", ".join(f"{t} {r.inputs}/{counts[t]}" for t, r in totals.items())
    print(f"[{time.perf_counter() - started:7.1f}s] {done}", flush=True)


def summary(totals: dict[str, ChunkResult], wall: float, seed: int, jobs: int, argv: list[str]) -> dict[str, Any]:
    return {
        "command": "python -m tests.fuzz.run " + " ".join(argv),
        "seed": seed,
        "inputs_total": sum(r.inputs for r in totals.values()),
        "failures_total": sum(r.failure_count for r in totals.values()),
        "wall_seconds": round(wall, 1),
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "targets": {
            t: {
                "inputs": r.inputs,
                "failures": r.failure_count,
                "cpu_seconds": round(r.seconds, 1),
                "inputs_per_cpu_second": round(r.inputs / r.seconds) if r.seconds else None,
                "outcomes": dict(sorted(r.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))),
                **r.extra,
            }
            for t, r in totals.items()
        },
        "failures": [
            {**vars(f), "input_bytes": len(f.input_hex) // 2, "input_hex": f.input_hex[:MAX_SUMMARY_HEX]}
            for r in totals.values()
            for f in r.failures
        ],
    }


def print_tables(totals: dict[str, ChunkResult]) -> None:
    for target, r in totals.items():
        print(f"\n== {target}: {r.inputs} inputs, {r.failure_count} failures, {r.seconds:.1f} CPU s")
        for outcome, n in sorted(r.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {n:9d}  {outcome}")


def replay(spec: str, seed: int) -> int:
    target, _, index_text = spec.partition(":")
    index = int(index_text)
    rng = rng_for(seed, target, index)
    try:
        if target == "codec":
            from . import target_codec as tc

            cinp = tc.generate(tc.build_corpus(seed), rng)
            print(f"input: {cinp.data.hex()}\ncontext: {cinp.context()}")
            print("outcome:", tc.check(cinp))
        elif target == "session":
            from . import target_session as ts

            corpus = ts.build_corpus(seed)
            sinp = ts.generate(corpus, rng)
            print(f"input: {sinp.frame.hex()}\ncontext: {sinp.context()}")
            print("outcome:", ts.check(corpus, sinp, reuse=False))
        elif target == "sealed":
            from . import target_sealed as tz

            zcorpus = tz.build_corpus(seed)
            zinp = tz.generate(zcorpus, rng)
            print(f"input: {zinp.data.hex()}\ncontext: {zinp.context()}")
            print("outcome:", tz.check(zcorpus, zinp))
        elif target == "rpc":
            asyncio.run(_replay_rpc(seed, index))
        elif target in ("http", "ws"):
            result = asyncio.run(run_socket_async(target, seed, index, 1))
            print("outcomes:", dict(result.outcomes))
            for failure in result.failures:
                print(failure.describe())
        else:
            raise SystemExit(f"unknown target {target!r}")
    except Exception:
        traceback.print_exc()
        return 1
    return 0


async def _replay_rpc(seed: int, index: int) -> None:
    from . import target_rpc as t

    async with t.live_node() as h:
        await t.wait_height(h, 1)
        inp = t.generate(h, rng_for(seed, t.TARGET, index))
        print(f"input: {inp.body[:4096]!r}\ncontext: {inp.context()}")
        print("answer:", str(await h.server.dispatch_bytes(inp.body))[:2000])
        print("outcome:", await t.check(h, inp))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="generated inputs in all")
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="summary JSON path")
    parser.add_argument("--replay", metavar="TARGET:INDEX", help="regenerate and check one input")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    if args.replay:
        return replay(args.replay, seed)
    counts = split_inputs(args.inputs, args.target)
    print(f"fuzzing with seed {seed}: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + f" on {args.jobs} process(es)", flush=True)
    totals, wall = run_all(counts, seed, args.jobs)
    print_tables(totals)
    result = summary(totals, wall, seed, args.jobs, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".tmp")  # written whole, then renamed
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(args.out)
    print(f"\n{result['inputs_total']} inputs in {wall:.1f} s wall, {result['failures_total']} failures (seed {seed}); summary in {args.out}")
    return 1 if result["failures_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
