"""What the soak watches while it runs: each node's memory, descriptors and log size, and ``/health``.

A ``Sample`` is read from ``/proc`` and the node's log file; ``HealthProbe``
asks every node's ``/health`` from 127.0.0.1 once a second and keeps the
longest stretch without an answer.

This module must never change what a node does, and never assert.
"""

from __future__ import annotations

import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    rss_mb: float
    fds: int
    log_bytes: int


def sample(pid: int, log: Path, at: float) -> Sample | None:
    """The node process's resident memory, open descriptors and log size now; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    rss_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return Sample(at, rss_kb / 1024, fds, log.stat().st_size if log.exists() else 0)


@dataclass
class HealthProbe:
    urls: list[str]
    answered: int = 0
    missed: int = 0
    longest_gap: float = 0.0
    _last_ok: dict[str, float] = field(default_factory=dict)

    def probe(self, now: float) -> None:
        for url in self.urls:
            last = self._last_ok.setdefault(url, now)
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    resp.read()
                self.answered += 1
                self.longest_gap = max(self.longest_gap, now - last)
                self._last_ok[url] = time.monotonic()
            except OSError:
                self.missed += 1
                self.longest_gap = max(self.longest_gap, time.monotonic() - last)
