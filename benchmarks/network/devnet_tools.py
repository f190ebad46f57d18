"""What driving a devnet of real node processes takes: liveness, waits, ``/metrics``, the commit log.

Shared by the job, consensus and sync measurements: a scratch directory that
is always removed, the node processes' ids, waits that fail as soon as a
node has exited, the ``/metrics`` counters read, the blocks of a span, the
commit times a node logged, and the ``tdml-node`` command line.

This module must never assert on a timing, start a node (``tdml_node.devnet``
does), or leave anything behind in its scratch directories.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import proc_cpu_seconds
from tdml_node.client import NodeClient
from tdml_node.devnet import Devnet, DevnetError

METRICS = (
    "tdml_units_trained_total",
    "tdml_units_checked_total",
    "tdml_units_failed_total",
    "tdml_blocks_committed_total",
    "tdml_commit_seconds_sum",
    "tdml_commit_seconds_count",
)


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, removed with everything in it when the block ends."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def pids(devnet: Devnet) -> list[int]:
    out = []
    for node in devnet.nodes:
        if node.process is None:
            raise DevnetError(f"node {node.index} is not running")
        out.append(node.process.pid)
    return out


def check_alive(devnet: Devnet) -> None:
    for node in devnet.nodes:
        if node.process is not None and node.process.poll() is not None:
            raise DevnetError(f"node {node.index} exited:\n{devnet.log_tail(node)}")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, devnet: Devnet | None = None,
             every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if devnet is not None:
            check_alive(devnet)
        if time.monotonic() > deadline:
            raise DevnetError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def wait_quiet(pids: Sequence[int], *, window: float = 0.5, busy_below: float = 0.2, timeout: float = 60.0) -> None:
    """Wait until the processes' start-up work is over: little CPU used by any of them over ``window``."""
    deadline = time.monotonic() + timeout
    last = [proc_cpu_seconds(p) for p in pids]
    while time.monotonic() < deadline:
        time.sleep(window)
        now = [proc_cpu_seconds(p) for p in pids]
        if all(b - a < busy_below * window for a, b in zip(last, now, strict=True)):
            return
        last = now


def read_metrics(rpc_url: str, names: Sequence[str] = METRICS) -> dict[str, float]:
    """The unlabelled samples ``names`` (default: those this package reads) of a node's ``/metrics`` page; empty if none answered."""
    try:
        with urllib.request.urlopen(rpc_url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def split_threads(pid: int, before: dict[int, float], after: dict[int, float]) -> tuple[float, float, float]:
    """(main thread, busiest other thread, the rest) CPU seconds between two thread samples."""
    deltas = {tid: t - before.get(tid, 0.0) for tid, t in after.items()}
    main = deltas.pop(pid, 0.0)
    busiest = max(deltas.values(), default=0.0)
    return main, busiest, sum(deltas.values()) - busiest


def blocks(client: NodeClient, first: int, last: int) -> Iterator[dict[str, Any]]:
    """The blocks of heights ``[first, last]``, one RPC call each, without their transactions' bodies."""
    for height in range(first, last + 1):
        yield client.call("tdml_getBlockByNumber", height, False)


def is_later_round(block: dict[str, Any]) -> bool:
    """Whether the block was decided in a round above 0 (round 0's proposal timed out or was refused)."""
    return int(block["header"]["round"]) > 0


COMMIT_LOG_CONFIG = {"log_level": "debug", "log_format": "json"}
"""What ``commit_log`` needs of a node: the per-block ``committed`` line is DEBUG, and JSON lines parse without guessing."""


def commit_log(log: Path, first: int, last: int) -> dict[int, tuple[float, int]]:
    """(POSIX seconds, round) at which the node logged committing each height in ``[first, last]``.

    The node must run with ``COMMIT_LOG_CONFIG`` (pass it in ``Devnet.create(config_overrides=...)``).
    """
    out: dict[int, tuple[float, int]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"msg": "committed"' not in line:
            continue
        try:
            doc = json.loads(line)
            height, round_ = int(doc["height"]), int(doc["round"])
            stamp = datetime.datetime.fromisoformat(doc["ts"])
        except (KeyError, TypeError, ValueError):
            continue
        if doc.get("msg") == "committed" and first <= height <= last:
            out[height] = (stamp.timestamp(), round_)
    return out


def commit_intervals(log: Path, first: int, last: int) -> list[tuple[float, int]]:
    """(seconds from committing ``h - 1`` to committing ``h``, ``h``'s round) for ``h`` in ``(first, last]``.

    Only heights whose own and previous commit both appear in the log count.
    """
    times = commit_log(log, first, last)
    return [(times[h][0] - times[h - 1][0], times[h][1]) for h in range(first + 1, last + 1)
            if h in times and h - 1 in times]


def height(client: NodeClient) -> int | None:
    """The node's height, or None while its RPC does not answer."""
    try:
        return int(client.call("tdml_blockNumber"))
    except (OSError, ValueError):
        return None


def cli(*args: str) -> None:
    """Run ``tdml-node ARGS`` in a child process; raise with its stderr if it fails."""
    out = subprocess.run([sys.executable, "-m", "tdml_node", *args], capture_output=True, text=True,
                         timeout=120, check=False)
    if out.returncode != 0:
        raise DevnetError(f"tdml-node {' '.join(args)} failed: {out.stderr}")
