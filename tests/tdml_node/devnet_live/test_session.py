"""``tdml-node devnet`` as real processes: its plain output, its logs, and its nodes dying with it however it dies.

Each test starts one 2-node devnet on the smallest job and reads the child
pids and ports from the devnet's own output; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import pty
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; the parent-death signal is Linux's"),
]

UP = re.compile(r"node (\d) up: .*pid (\d+), rpc http://127\.0\.0\.1:(\d+), p2p 127\.0\.0\.1:(\d+), log (\S+)")
LINE = re.compile(r"^\[\s*([\d.]+)s\] ")
WAIT = 120.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


class Devnet:
    """A ``tdml-node devnet`` process whose output is read line by line on a thread, so every read has a deadline."""

    def __init__(self, tmp: Path, steps: int, *, terminal: bool = False) -> None:
        """``terminal``: run it on a pseudo-terminal, so it shows the live view as it would to a person."""
        master, slave = pty.openpty() if terminal else (-1, -1)
        env = dict(os.environ, TMPDIR=str(tmp), COLUMNS="140", LINES="40", TERM="xterm")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tdml_node", "devnet", "--nodes", "2", "--steps", str(steps), "--no-reference",
             "--logs", str(tmp / "logs"), "--out", str(tmp / "model.safetensors")],
            stdout=slave if terminal else subprocess.PIPE, stderr=slave if terminal else subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=tmp, env=env,
        )
        if terminal:
            os.close(slave)
        self.stream = open(master, "rb") if terminal else self.proc.stdout
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.stream is not None
        with contextlib.suppress(OSError):  # a pty's master reads EIO once the last writer is gone
            for raw in self.stream:
                line = ANSI.sub("", raw.decode(errors="replace")).replace("\r", "")
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def finish(self, timeout: float = WAIT) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        assert self.stream is not None
        self.stream.close()
        return code

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def nodes(self) -> list[tuple[int, int, int]]:
        """(pid, rpc port, p2p port) of every node that came up."""
        return [(int(m[2]), int(m[3]), int(m[4])) for m in map(UP.search, self.lines) if m]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped; only its exit status is waiting for init to reap it


def _bound(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a holder; a listener is
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _assert_all_gone(nodes: list[tuple[int, int, int]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid, _, _ in nodes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid, _, _ in nodes if _alive(pid)], "node processes outlived the devnet"
    assert not [p for _, rpc, p2p in nodes for p in (rpc, p2p) if _bound(p)], "a node port is still bound"


def test_a_short_devnet_prints_urls_progress_and_a_report_on_the_same_clock(tmp_path: Path) -> None:
    devnet = Devnet(tmp_path, steps=3)
    assert devnet.finish() == 0, devnet.text
    nodes = devnet.nodes()
    assert len(nodes) == 2 and all(f"http://127.0.0.1:{rpc}" in devnet.text for _, rpc, _ in nodes)
    progress = [float(m[1]) for m in map(LINE.match, devnet.lines) if m]
    assert len(progress) >= 2 and progress == sorted(progress)
    final = next(line for line in devnet.lines if LINE.match(line) and "done: step 3/3" in line)
    reported = re.search(r"elapsed\s*│ ([\d.]+) s", devnet.text)
    assert reported is not None and float(reported[1]) == float(LINE.match(final)[1])  # type: ignore[index]
    total = re.search(r"total\s*│ ([\d.]+) s", devnet.text)
    assert total is not None and float(total[1]) >= float(reported[1])
    logs = re.search(r"node logs\s*│ (\S+)", devnet.text)
    assert logs is not None and Path(logs[1]) == (tmp_path / "logs").resolve()
    assert sorted(p.name for p in Path(logs[1]).iterdir()) == ["node0.log", "node1.log"]
    assert all(p.stat().st_size > 0 for p in Path(logs[1]).iterdir())
    homes = re.search(r"node homes in (\S+);", devnet.text)
    assert homes is not None and not Path(homes[1]).exists()
    _assert_all_gone(nodes)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_every_node_removes_the_homes_and_exits_128_plus_it(tmp_path: Path, sig: signal.Signals) -> None:
    devnet = Devnet(tmp_path, steps=10_000)
    devnet.until(r"node 1 up|node 0 up")
    devnet.until(r"node 1 up|node 0 up")
    nodes = devnet.nodes()
    homes = re.search(r"node homes in (\S+);", devnet.text)
    devnet.proc.send_signal(sig)
    code = devnet.finish(timeout=60)
    assert code == 128 + sig, devnet.text
    assert "stopping 2 node(s)…" in devnet.text
    assert "Traceback" not in devnet.text and "Aborted" not in devnet.text
    assert homes is not None and not Path(homes[1]).exists()
    assert len(nodes) == 2
    _assert_all_gone(nodes)


def test_nodes_die_when_the_devnet_is_sigkilled(tmp_path: Path) -> None:
    devnet = Devnet(tmp_path, steps=10_000)
    devnet.until(r"node 1 up|node 0 up")
    devnet.until(r"node 1 up|node 0 up")
    nodes = devnet.nodes()
    assert len(nodes) == 2 and all(_alive(pid) for pid, _, _ in nodes)
    os.kill(devnet.proc.pid, signal.SIGKILL)
    devnet.finish(timeout=30)
    _assert_all_gone(nodes)


def test_ctrl_c_in_a_terminal_stops_the_live_view_and_the_nodes_and_exits_130(tmp_path: Path) -> None:
    devnet = Devnet(tmp_path, steps=10_000, terminal=True)
    devnet.until(r"node 1 up|node 0 up")
    devnet.until(r"node 1 up|node 0 up")
    devnet.until(r"│\s+1 │ validator\+trainer")  # the live view's node table
    nodes = devnet.nodes()
    devnet.proc.send_signal(signal.SIGINT)
    assert devnet.finish(timeout=60) == 130, devnet.text
    assert "TDML devnet  2 node(s)" in devnet.text and "stopping 2 node(s)…" in devnet.text
    assert "Traceback" not in devnet.text and "Aborted" not in devnet.text
    _assert_all_gone(nodes)
