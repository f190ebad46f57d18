"""Bounds on what a remote party can make us log: short, escaped, rate-limited lines, never a traceback.

A peer's bad input (junk HTTP, a malformed frame, a hostile Goodbye text)
is worth one log line, not one per byte it sends. ``LogBound`` is a
``logging.Filter`` that, for the records it bounds,

- lets through at most a burst and then a steady rate of records per key
  (the peer's IP when the record names one, plus the logger and the message
  template) and, across all keys, a global burst and rate, so nothing an
  attacker sends grows the log faster than a fixed rate;
- rewrites each record it lets through to one escaped line of at most
  ``max_line`` characters, drops its traceback (keeping the exception's type
  and a short excerpt of its text) and lowers ERROR and above to WARNING;
- says on the next line of a key it lets through how many of that key it
  held back.

``install_log_bounds`` puts one on aiohttp's server-side loggers (every
record there is about a client's input) and one on our p2p loggers that
bounds only the records tagged with ``peer_extra`` (the rest, such as a
crashed task's traceback, stay whole).

This module must never raise from a filter, keep unbounded state, or log
itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

EXCERPT = 80
"""The longest excerpt of a remote party's input a log line carries."""

AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.websocket")
P2P_LOGGERS = ("tdml.p2p", "tdml.p2p.transport")
MAX_KEYS = 4096
"""Keys remembered at once; the oldest is forgotten first (a flood of new IPs only costs their burst)."""


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """``value`` as at most ``limit`` printable ASCII characters (escaped like ``repr``, cut with "...")."""
    text = value if isinstance(value, str) else repr(value)
    head = text[: limit + 1]  # escaping only lengthens: no need to look further
    escaped = "".join(c if c.isascii() and c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in head)
    if len(escaped) <= limit and len(text) <= limit:
        return escaped
    return escaped[: max(limit - 3, 0)] + "..."


def peer_extra(address: str) -> dict[str, str]:
    """``extra=`` for a log call about a peer's doing: the record is bounded, keyed by the peer's host."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    return {"peer": host.strip("[]")}


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0  # records of this key held back since its last one let through

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now


class LogBound(logging.Filter):
    """Rate-limits and shortens records (all of them, or with ``tagged_only`` those with a ``peer`` attribute)."""

    def __init__(
        self,
        *,
        rate: float = 0.2,
        burst: int = 5,
        global_rate: float = 2.0,
        global_burst: int = 50,
        max_line: int = 240,
        tagged_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.rate, self.burst = rate, float(burst)
        self.global_rate, self.global_burst = global_rate, float(global_burst)
        self.max_line = max_line
        self.tagged_only = tagged_only
        self._clock = clock
        self._global = _Bucket(float(global_burst), clock())
        self._keys: dict[tuple[str, str, str], _Bucket] = {}
        self.suppressed_total = 0
        """Records held back since this filter was made."""

    def filter(self, record: logging.LogRecord) -> bool:
        peer = getattr(record, "peer", None)
        if self.tagged_only and peer is None:
            return True
        now = self._clock()
        key = (str(peer or ""), record.name, str(record.msg)[:EXCERPT])
        bucket = self._keys.get(key)
        if bucket is None:
            if len(self._keys) >= MAX_KEYS:
                del self._keys[next(iter(self._keys))]
            bucket = self._keys[key] = _Bucket(self.burst, now)
        bucket.refill(now, self.rate, self.burst)
        self._global.refill(now, self.global_rate, self.global_burst)
        if bucket.tokens < 1.0 or self._global.tokens < 1.0:
            bucket.suppressed += 1
            self.suppressed_total += 1
            return False
        bucket.tokens -= 1.0
        self._global.tokens -= 1.0
        self._rewrite(record, bucket.suppressed)
        bucket.suppressed = 0
        return True

    def _rewrite(self, record: logging.LogRecord, suppressed: int) -> None:
        try:
            message = record.getMessage()
        except Exception as failure:  # a bad format string must not escape the filter
            message = f"{record.msg!r} (unformattable: {type(failure).__name__})"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message}: {type(error).__name__}: {str(error)[:EXCERPT]}"
        line = excerpt(message, self.max_line)
        if suppressed:
            line += f" ({suppressed} similar messages suppressed)"
        record.msg, record.args = line, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)


_installed: dict[str, LogBound] = {}


def install_log_bounds() -> dict[str, LogBound]:
    """Put the bounds on aiohttp's server loggers and our p2p loggers, once per process; returns them by logger."""
    if not _installed:
        server_side = LogBound()
        for name in AIOHTTP_LOGGERS:
            _installed[name] = server_side
        # Our own lines are many more and mostly about honest peers: a wider bound.
        ours = LogBound(rate=1.0, burst=20, global_rate=10.0, global_burst=200, tagged_only=True)
        for name in P2P_LOGGERS:
            _installed[name] = ours
        for name, bound in _installed.items():
            logging.getLogger(name).addFilter(bound)
    return dict(_installed)
