"""What a private job costs: sealing throughput, key shares, and the ``heavy`` job private against public.

Measured in one run, in this order:

1. envelopes: ``seal_blob`` and ``open_blob`` (1 MiB XSalsa20-Poly1305
   chunks) on 1 MiB, 16 MiB and 64 MiB of random bytes and on the ``heavy``
   job's dataset (17.8 MB), each beside SHA-256 of the same bytes (what blob
   transfer does to every blob anyway); MB/s of plaintext, the median of
   ``CRYPTO_REPEATS`` repeats, and whether every opened envelope gave back
   its input byte for byte;
2. key shares: ``seal_key`` of one data key to N members (N = 4 and 100),
   and ``open_key`` of one share, per call, from ``benchmarks.common.rate``;
   and the client's whole ``seal_job`` of the ``heavy`` job to 4 members;
3. the reference: ``run_reference`` of the public ``heavy`` spec, once, for
   its final root;
4. the ``heavy`` job on a fresh 4-node devnet of real node processes, public
   then private, alternating (public, private, public, private …) for
   ``repeats`` pairs, so both kinds of run see the shared machine's load in
   turn. Time per step: submission to the first sighting of the last step's
   outcome over RPC, ÷ steps, as ``benchmarks.bench_pipeline`` measures it.
   The private run submits through ``tdml_node.devnet.submit_job(...,
   private=True)``, so its span includes sealing the dataset and the key.
   Every run's final model root is compared with the reference's, and the
   outcome is recorded per run.

The full run takes ``STEPS[0]`` = 10 steps of ``heavy`` per devnet run: about
6–7 s a step on this 2-core machine when nothing else runs, so the 4 devnet
runs, the reference and the envelopes took 6 minutes (10 minutes with other
work loading the machine), under the 15 minutes it must stay within.
``--quick`` takes 1 pair of 3-step runs (about 2–3 minutes).

``python -m benchmarks.bench_private [--quick] [--steps N] [--repeats N]``
writes ``benchmarks/results/private.json`` and ``private.md``
(``private-quick.*`` for ``--quick``).

This module must never assert on a timing, assume a final root it did not
compare, leave a node running (``running_devnet`` stops them, ``scratch``
removes their homes), or write outside ``benchmarks/results/`` (or ``--out``)
and its temporary directories.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import BenchResult, Settings, machine_info, now_iso, rate
from benchmarks.heavy_job import heavy_job
from benchmarks.network.devnet_tools import check_alive, height, pids, scratch, wait_for, wait_quiet
from benchmarks.network.plan import load_text
from consensus.crypto import Keypair
from consensus.types import JobSpec

NAME = "private"
TITLE = "Private jobs: envelope and key-share costs, and the heavy job private vs public on a 4-node devnet"
NODES = 4
STEPS = (10, 3)
"""Steps of the ``heavy`` job in each devnet run: (full, quick)."""
REPEATS = (2, 1)
"""(public, private) pairs of devnet runs: (full, quick)."""
CRYPTO_REPEATS = (5, 3)
MIB = 1 << 20
SIZES = (("1 MiB", MIB), ("16 MiB", 16 * MIB), ("64 MiB", 64 * MIB))
"""Random-byte blobs the envelopes are measured on, beside the ``heavy`` dataset."""
MEMBERS = (4, 100)
RATE_SECONDS = 0.2
"""Shortest batch of calls ``rate`` times for one figure (a 1 MiB seal or one sealed box takes a millisecond or less)."""
JOB_TIMEOUT = 900.0
PEERS_TIMEOUT = 60.0
POLL_SECONDS = 0.25
HISTORY_LIMIT = 4
GOAL = 1.05
"""The issue's goal for private ÷ public time per step on ``heavy``."""
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _progress(text: str) -> None:
    print(f"[bench private] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# 1. Envelopes


@dataclass(frozen=True, slots=True)
class EnvelopeFigures:
    label: str
    size: int
    """Plaintext bytes."""
    envelope_bytes: int
    seal_seconds: tuple[float, ...]
    open_seconds: tuple[float, ...]
    sha256_seconds: tuple[float, ...]
    opened_equal: bool
    """Whether every repeat's opened envelope equalled the input."""


def measure_envelope(label: str, data: bytes, repeats: int, min_seconds: float = RATE_SECONDS) -> EnvelopeFigures:
    """Seal, open and hash ``data``, per call, ``repeats`` times; each repeat seals under a fresh key, as a client does.

    Each figure comes from ``rate`` (a batch of calls lasting at least
    ``min_seconds``), so a 1 MiB call of a millisecond is not timed alone.
    """
    from tdml_node.work.sealed import new_data_key, open_blob, seal_blob

    seals, opens, hashes = [], [], []
    equal = True
    envelope = b""
    for _ in range(repeats):
        key = new_data_key()
        envelope = seal_blob(data, key)
        # Checked every repeat, untimed: a throughput of a wrong decryption would be worthless.
        equal = equal and open_blob(envelope, key) == data
        seals.append(1.0 / rate(partial(seal_blob, data, key), min_seconds))
        opens.append(1.0 / rate(partial(open_blob, envelope, key), min_seconds))
        hashes.append(1.0 / rate(partial(hashlib.sha256, data), min_seconds))
    return EnvelopeFigures(label, len(data), len(envelope), tuple(seals), tuple(opens), tuple(hashes), equal)


@dataclass(frozen=True, slots=True)
class ShareFigures:
    members: int
    seal_seconds: tuple[float, ...]
    """Sealing one data key to every member, per repeat."""
    open_seconds: tuple[float, ...]
    """Opening one share, per call, per repeat."""
    opened_equal: bool


def measure_shares(members: int, repeats: int, min_seconds: float = RATE_SECONDS) -> ShareFigures:
    """Seal a data key to ``members`` fresh node keys, and open one member's share, ``repeats`` times."""
    from tdml_node.work.sealed import new_data_key, open_key, seal_key

    nodes = [Keypair.generate() for _ in range(members)]
    publics = [bytes(n.public_key) for n in nodes]
    key = new_data_key()

    def seal_all() -> list[bytes]:
        return [seal_key(key, p) for p in publics]

    share = seal_all()[0]
    seals, opens = [], []
    for _ in range(repeats):
        seals.append(1.0 / rate(seal_all, min_seconds))
        opens.append(1.0 / rate(partial(open_key, share, nodes[0].signing_key), min_seconds))
    # Every member's share must open to the key under its own node key, not just the one timed.
    equal = all(open_key(s, n.signing_key) == key for s, n in zip(seal_all(), nodes, strict=True))
    return ShareFigures(members, tuple(seals), tuple(opens), equal)


def measure_seal_job(spec: JobSpec, dataset: bytes, members: int, repeats: int) -> tuple[float, ...]:
    """Seconds of the client's whole ``seal_job`` (envelope, shares, spec) of ``dataset`` to ``members`` keys."""
    from tdml_node.sdk import seal_job

    publics = [bytes(Keypair.generate().public_key) for _ in range(members)]
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        seal_job(spec, dataset, publics)
        out.append(time.perf_counter() - started)
    return tuple(out)


def add_crypto_rows(res: BenchResult, envelopes: Sequence[EnvelopeFigures], shares: Sequence[ShareFigures],
                    seal_job_seconds: Sequence[float] = ()) -> None:
    """The envelope and key-share rows and facts of ``res``, one value per repeat."""
    for e in envelopes:
        seal = res.row(f"seal_blob, {e.label}", "MB/s", baseline_label="SHA-256 of the same bytes")
        opened = res.row(f"open_blob, {e.label}", "MB/s", baseline_label="SHA-256 of the same bytes")
        for s, o, h in zip(e.seal_seconds, e.open_seconds, e.sha256_seconds, strict=True):
            seal.add(e.size / s / 1e6, e.size / h / 1e6)
            opened.add(e.size / o / 1e6, e.size / h / 1e6)
    for f in shares:
        res.row(f"seal_key: one data key to {f.members} members", "ms").ours.extend(s * 1e3 for s in f.seal_seconds)
    if shares:
        res.row("open_key: one share", "µs").ours.extend(s * 1e6 for s in shares[0].open_seconds)
    if seal_job_seconds:
        res.row("seal_job: the heavy dataset and its key to 4 members (the client's whole sealing)", "ms").ours.extend(
            s * 1e3 for s in seal_job_seconds)
    res.facts["envelopes opened to their input, byte for byte"] = [f"{e.label}: {e.opened_equal}" for e in envelopes]
    res.facts["envelope bytes over plaintext bytes"] = [f"{e.label}: +{e.envelope_bytes - e.size:,}" for e in envelopes]
    res.facts["every key share opened to the data key"] = [f"{f.members} members: {f.opened_equal}" for f in shares]


# ---------------------------------------------------------------------------
# 2. The heavy job on a devnet


@dataclass(frozen=True, slots=True)
class JobRun:
    private: bool
    seconds: float
    """Submission to the first sighting of the last step's outcome."""
    blocks: int
    final_root: str
    final_accuracy: float | None
    spec_private: bool
    """What the chain says of the job (``spec.private``)."""
    sealed_to: int
    load: str


def measure_job(spec: JobSpec, dataset: bytes, *, private: bool) -> JobRun:
    """A fresh 4-node devnet trains the job, submitted public or private; figures from node 0's RPC.

    Neither kind of run hands the dataset to the nodes beforehand: the
    submission uploads it (the envelope, for a private job) to node 0, and
    the others fetch it from their peers, so both runs move the same bytes.
    """
    from tdml_node.devnet import Devnet, running_devnet, submit_job

    load0 = os.getloadavg()
    with scratch("tdml-bench-private-") as base:
        devnet = Devnet.create(base / "net", NODES)
        with running_devnet(devnet):
            clients = [n.client(timeout=60) for n in devnet.nodes]

            def connected() -> bool:
                return all(len(c.call("tdml_peers")) >= NODES - 1 for c in clients)

            wait_for(connected, PEERS_TIMEOUT, "the peers", devnet)
            wait_quiet(pids(devnet))
            client = clients[0]
            height0 = height(client) or 0
            started = time.perf_counter()
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset, private=private)

            def last_step_seen() -> bool:
                history = client.call("tdml_getJobHistory", job_id, HISTORY_LIMIT) or []
                return any(int(o["step"]) == spec.steps - 1 for o in history)

            wait_for(last_step_seen, JOB_TIMEOUT, f"step {spec.steps - 1} of the job", devnet, every=POLL_SECONDS)
            seconds = time.perf_counter() - started
            check_alive(devnet)
            height1 = height(client) or height0
            view = client.call("tdml_getJob", job_id) or {}
    return JobRun(
        private=private,
        seconds=seconds,
        blocks=height1 - height0,
        final_root=str(view.get("modelRoot", "")),
        final_accuracy=(view.get("lastEval") or {}).get("testAccuracy"),
        spec_private=bool((view.get("spec") or {}).get("private")),
        sealed_to=int(view.get("sealedTo") or 0),
        load=load_text(load0, os.getloadavg()),
    )


def measure_reference_root(spec: JobSpec, dataset: bytes) -> tuple[str, float]:
    """(final root as 0x-hex, seconds) of one ``run_reference`` of the public spec, in this process."""
    from tdml_node.work.reference import run_reference

    started = time.perf_counter()
    result = run_reference(spec, dataset)
    return "0x" + bytes(result.final_root).hex(), time.perf_counter() - started


def add_job_rows(res: BenchResult, runs: Sequence[JobRun], reference_root: str) -> None:
    """Rows of private against public, pair by pair (each private run against the public run just before it)."""
    steps = res.facts["heavy steps per devnet run"]
    pairs = list(zip(runs[0::2], runs[1::2], strict=True))
    per_step = res.row("time per step, heavy job, 4-node devnet: private (submission to last outcome)", "ms",
                       baseline_label="public, the run just before")
    blocks = res.row("blocks per step, heavy job, 4-node devnet: private", "blocks", baseline_label="public")
    added = res.row("time per step added by privacy (private − public, same pair)", "ms")
    for public, private in pairs:
        per_step.add(private.seconds / steps * 1e3, public.seconds / steps * 1e3)
        blocks.add(private.blocks / steps, public.blocks / steps)
        added.add((private.seconds - public.seconds) / steps * 1e3)
    names = [f"{'private' if r.private else 'public'} #{i // 2 + 1}" for i, r in enumerate(runs)]
    res.facts.update({
        "devnet runs, in order": names,
        "seconds per run (submission to last step seen)": [f"{n}: {r.seconds:.2f}" for n, r in zip(names, runs, strict=True)],
        "time per step per run, ms": [f"{n}: {r.seconds / steps * 1e3:,.0f}" for n, r in zip(names, runs, strict=True)],
        "blocks per run": [f"{n}: {r.blocks}" for n, r in zip(names, runs, strict=True)],
        "reference final root (public spec, run_reference)": reference_root,
        "final root equals the reference, per run": [r.final_root.lower() == reference_root.lower() for r in runs],
        "final roots, per run": [f"{n}: {r.final_root}" for n, r in zip(names, runs, strict=True)],
        "final test accuracy, per run": [f"{n}: {r.final_accuracy}" for n, r in zip(names, runs, strict=True)],
        "the chain's spec.private, per run": [r.spec_private for r in runs],
        "key shares on chain (sealedTo), per run": [r.sealed_to for r in runs],
        "load average (1 min, 5 min in brackets) before → after, per run": [
            f"{n}: {r.load}" for n, r in zip(names, runs, strict=True)],
    })


# ---------------------------------------------------------------------------
# The whole benchmark


def crypto_inputs(dataset: bytes, sizes: Sequence[tuple[str, int]] = SIZES) -> list[tuple[str, bytes]]:
    """The blobs the envelopes are measured on: random bytes of each size, then the ``heavy`` dataset."""
    return [*((label, os.urandom(size)) for label, size in sizes), (f"heavy dataset ({len(dataset) / 1e6:.1f} MB)", dataset)]


def run(settings: Settings, steps: int | None = None) -> BenchResult:
    steps = steps or settings.pick(*STEPS)
    repeats = settings.repeats_for(*REPEATS)
    crypto_repeats = settings.pick(*CRYPTO_REPEATS)
    spec, dataset = heavy_job(steps=steps)
    res = BenchResult(NAME, TITLE, repeats)

    _progress(f"envelopes and key shares, {crypto_repeats} repeats …")
    envelopes = [measure_envelope(label, data, crypto_repeats) for label, data in crypto_inputs(dataset)]
    shares = [measure_shares(n, crypto_repeats) for n in MEMBERS]
    add_crypto_rows(res, envelopes, shares, measure_seal_job(spec, dataset, NODES, crypto_repeats))

    _progress(f"reference: heavy, {steps} steps …")
    reference_root, reference_seconds = measure_reference_root(spec, dataset)
    res.facts["heavy steps per devnet run"] = steps
    res.facts["heavy dataset bytes"] = len(dataset)
    res.facts["reference seconds (one run_reference, this process)"] = round(reference_seconds, 2)

    runs: list[JobRun] = []
    for i in range(repeats):
        for private in (False, True):
            _progress(f"devnet {i + 1}/{repeats}, {'private' if private else 'public'}: heavy, {steps} steps …")
            r = measure_job(spec, dataset, private=private)
            _progress(f"  {r.seconds:.1f}s, {r.blocks} blocks, root {'=' if r.final_root.lower() == reference_root else '≠'} reference")
            runs.append(r)
    add_job_rows(res, runs, reference_root)
    res.facts["job"] = (f"heavy: MLP 64-768-768-768-10, SGD lr 0.1 momentum 0.9, global batch {spec.global_batch} = "
                        f"{spec.shards} shards × {spec.global_batch // spec.shards}, H = 1, {steps} steps, eval every "
                        f"{spec.eval_every}; dataset {len(dataset):,} bytes")
    res.notes = [
        f"Envelopes: per repeat ({crypto_repeats} repeats, in this process) a fresh key, seal_blob, open_blob of "
        "that envelope (checked equal to the input, untimed), then each of seal_blob, open_blob and hashlib.sha256 "
        f"of the plaintext timed by benchmarks.common.rate (a batch of calls lasting at least {RATE_SECONDS} s); "
        "MB/s = plaintext bytes × calls ÷ seconds ÷ 10^6. The ratio column is the envelope's throughput ÷ SHA-256's in the same repeat. Random bytes for "
        "the fixed sizes (the cipher's speed does not depend on the bytes); the heavy job's own dataset for the last.",
        f"Key shares: seal_key of one data key to each of N fresh Ed25519 node keys, and open_key of one share, each "
        f"from benchmarks.common.rate (a batch of calls lasting at least {RATE_SECONDS} s) per repeat. seal_job: the "
        "client's whole sealing of the heavy job (envelope under a fresh key, 4 shares, the new spec), as "
        "submit_spec(private=True) runs it.",
        f"Devnet: a fresh {NODES}-node devnet of real node processes per run (every node a validator and trainer); "
        "once the peers are connected and the nodes idle, the job is submitted through tdml_node.devnet.submit_job "
        "(private=True for the private run: it seals the dataset and seals the key to the chain's validators and "
        "trainers), and node 0's tdml_getJobHistory is polled every "
        f"{POLL_SECONDS} s until the last step's outcome shows. Time per step = that span ÷ steps; it includes the "
        "upload of the dataset (or envelope) to node 0, the other nodes fetching it from their peers, and, for the "
        "private run, sealing it and each member opening it once.",
        "Runs alternate public, private, public, private …; each ratio is a private run's time per step ÷ that of "
        "the public run just before it, and the row gives the median and range over the pairs.",
        "Final roots: each run's tdml_getJob modelRoot compared with run_reference of the public spec (computed "
        "once in this process); the private spec differs only in naming the envelope and being private, so the "
        "reference is the same training.",
        "The machine is a shared 2-core VM (see the load averages): the 4 node processes share those 2 cores, and "
        "other work ran beside this benchmark.",
    ]
    return res


# ---------------------------------------------------------------------------
# Results and the command line


def _row(section: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    return next((r for r in section["rows"] if r["label"].startswith(prefix)), None)


def what_this_shows(section: dict[str, Any]) -> str:
    """The paragraph of the markdown that reads the figures, written from them (no figure it does not hold)."""
    facts = section["facts"]
    parts = []
    ratio_row = _row(section, "time per step, heavy job")
    if ratio_row is not None:
        r = ratio_row["ratio_ours_over_baseline"]
        if r["max"] <= GOAL:
            verdict = f"every pair within the goal of at most {GOAL}×"
        elif r["median"] <= GOAL:
            verdict = f"the median within the goal of at most {GOAL}×, the slowest pair outside it"
        else:
            verdict = f"outside the goal of at most {GOAL}×"
        parts.append(
            f"On the heavy job ({facts['heavy steps per devnet run']} steps, 4-node devnet), a private run's time per "
            f"step was {r['median']:.3f}× the public run's before it (range {r['min']:.3f} – {r['max']:.3f} over "
            f"{len(r['runs'])} pair(s)): {verdict}. ")
        public = ratio_row["baseline"]["runs"]
        if len(public) > 1:
            # Two runs of the same public job bound what the machine's noise alone moves a time per step by.
            parts.append(f"The public runs themselves ranged over {max(public) / min(public):.3f}× of each other, "
                         "the run-to-run noise any private ÷ public ratio is read against. ")
        added = _row(section, "time per step added by privacy")
        if added is not None:
            diff = added["ours"]["median"]
            parts.append(f"At the median a private step took {abs(diff):,.0f} ms {'more' if diff >= 0 else 'less'} "
                         f"than the public step of its pair (a public step: {ratio_row['baseline']['median']:,.0f} ms). ")
    equal = facts.get("final root equals the reference, per run")
    if equal is not None:
        if all(equal):
            parts.append("Every run's final model root, private and public, equalled the public reference's bit for bit. ")
        else:
            parts.append(f"Not every run's final root equalled the public reference: {equal} (in run order). ")
    heavy, sealed = _row(section, "open_blob, heavy"), _row(section, "seal_blob, heavy")
    if heavy is not None and sealed is not None:
        size_mb = facts["heavy dataset bytes"] / 1e6
        parts.append(
            f"Sealing ran at {sealed['ours']['median']:.0f} MB/s and opening at {heavy['ours']['median']:.0f} MB/s on "
            f"the heavy dataset ({sealed['ratio_ours_over_baseline']['median']:.2f}× and "
            f"{heavy['ratio_ours_over_baseline']['median']:.2f}× SHA-256's throughput on the same bytes), so a member "
            f"opens its {size_mb:.1f} MB once per job in about {size_mb / heavy['ours']['median'] * 1e3:.0f} ms. ")
    share = _row(section, "seal_key: one data key to 100")
    opened = _row(section, "open_key")
    if share is not None and opened is not None:
        parts.append(f"Sealing the key to 100 members took {share['ours']['median']:.1f} ms and opening one share "
                     f"{opened['ours']['median']:.0f} µs.")
    return "".join(parts).strip()


def render_markdown(doc: dict[str, Any]) -> str:
    from benchmarks.run_all import section_lines

    m = doc["machine"]
    section = doc["benchmarks"][NAME]
    loads = ", ".join(f"{v:.2f}" for v in m["load_average_at_start"])
    lines = [
        "# Private jobs: what sealing costs",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable, {m['cpu_model']}), {m['platform']}; Python "
        f"{m['python']}, torch {m['torch']}, pynacl {m['pynacl']}; load average at start {loads}. Run {m['date']}, "
        f"{doc['seconds']:.0f} s{' (quick smoke run)' if doc.get('quick') else ''}. Command: `{doc['command']}`.",
        "",
        "Each figure is the median of its repeats with (min – max); a ratio is ours ÷ baseline, taken per repeat, "
        "then its median. The machine is shared: compare the ratios rather than the absolute figures.",
        "",
        "## What this shows",
        "",
        what_this_shows(section),
        *section_lines(NAME, section),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_private", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {REPEATS[1]} pair of {STEPS[1]}-step runs")
    parser.add_argument("--steps", type=int, default=None, help=f"steps of each devnet run (default {STEPS[0]})")
    parser.add_argument("--repeats", type=int, default=None, help=f"(public, private) pairs (default {REPEATS[0]})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the result files")
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(args_list)
    if (args.steps is not None and args.steps < 1) or (args.repeats is not None and args.repeats < 1):
        parser.error("--steps and --repeats must be at least 1")
    started = time.perf_counter()
    doc: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    measured_at = now_iso()
    result = run(Settings(quick=args.quick, repeats=args.repeats), steps=args.steps)
    result.seconds = time.perf_counter() - started
    result.measured_at = measured_at
    doc.update({
        "benchmarks": {NAME: result.to_json()},
        "command": " ".join(["python -m benchmarks.bench_private", *args_list]),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_at_end": list(os.getloadavg()),
    })
    stem = f"{NAME}-quick" if args.quick else NAME
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    markdown = render_markdown(doc)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    _progress(f"wrote {stem}.json and {stem}.md in {args.out} after {doc['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
