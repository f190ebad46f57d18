"""A connection guard for an aiohttp server: limits and deadlines at the socket, below HTTP.

``ConnectionGuard.serve`` binds a listening socket whose protocol wraps
aiohttp's own (the ``web.Server`` of an ``AppRunner``) and adds what aiohttp
does not have:

- **limits**: connections open at once on this port, per client IP, and
  across every guarded port of the process (below the descriptor limit,
  which ``raise_nofile_limit`` lifts to the hard limit). Some of each total
  is reserved for IPs the owner calls known (``is_known``), so a flood of
  strangers cannot lock out real peers. A connection over a limit is
  aborted at once, never handed to aiohttp;
- **deadlines**: a request's headers must arrive within ``header_timeout``
  of the accept (or of the first byte after a keep-alive pause); nothing
  may stall for ``idle_timeout`` (bytes in, or the write buffer draining,
  count as progress, so a big response to a reader that reads is not cut);
  unsent bytes may not wait ``write_timeout`` without any going out, even
  from a client that keeps sending (a subscriber that never reads); and,
  where the port is for upgrades, the owner must call ``mark_established`` within
  ``establish_timeout``;
- **a byte budget before establishment**, so a stranger cannot make us
  buffer megabytes before it has proved anything: past the budget the
  guard stops reading and holds at most one read until establishment,
  closing the connection if more comes;
- **accept-error back-off**: descriptor exhaustion is logged once per
  interval with a count, not once per failed accept.

Counters (``GuardStats``) say what it did. Outbound connections never pass
through it. This module must never parse HTTP or know what the connections
carry: the owner tells it about requests (``middleware``) and establishment.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from p2p.logbound import install_log_bounds

log = logging.getLogger("tdml.guard")

NOFILE_MARGIN_MIN = 64
NOFILE_MARGIN_MAX = 1024 + 64
"""Descriptors kept out of the connection budget (a quarter of the limit, within these bounds): storage files
(LevelDB keeps up to 1000 open by default), outbound dials, logs, pipes."""
ACCEPT_ERROR_INTERVAL = 10.0
"""At most one log line per this many seconds about failed accepts."""
_ACCEPT_ERROR = "socket.accept() out of system resource"
HOLD_LIMIT = 256 * 1024
"""Bytes past the pre-establishment budget held back (one socket read of asyncio's); more closes the connection."""


class Slot:
    """One held place in a ``SlotCounter``; ``release`` is idempotent, so every path may call it."""

    __slots__ = ("_counter", "key")

    def __init__(self, counter: SlotCounter, key: str) -> None:
        self._counter: SlotCounter | None = counter
        self.key = key

    @property
    def held(self) -> bool:
        return self._counter is not None

    def release(self) -> None:
        counter, self._counter = self._counter, None
        if counter is not None:
            counter._release(self.key)


class SlotCounter:
    """Places counted in total and per key; ``reserved`` of the total only known keys may take.

    A known key is not held to ``per_key`` either: several honest peers may
    share a host (a test network on loopback, a NAT), and the total still bounds them.
    """

    def __init__(self, total: int, per_key: int, reserved: int = 0) -> None:
        if total < 1 or per_key < 1 or not 0 <= reserved < total:
            raise ValueError(f"bad limits: total={total} per_key={per_key} reserved={reserved}")
        self.total, self.per_key, self.reserved = total, per_key, reserved
        self.count = 0
        self._by_key: dict[str, int] = {}

    def held_by(self, key: str) -> int:
        return self._by_key.get(key, 0)

    def try_acquire(self, key: str, known: bool = False) -> Slot | None:
        """A slot for ``key``, or None when a limit is reached."""
        if self.count >= self.total:
            return None
        if not known and (self.count >= self.total - self.reserved or self.held_by(key) >= self.per_key):
            return None
        self.count += 1
        self._by_key[key] = self.held_by(key) + 1
        return Slot(self, key)

    def _release(self, key: str) -> None:
        self.count -= 1
        left = self._by_key[key] - 1
        if left:
            self._by_key[key] = left
        else:
            del self._by_key[key]


def raise_nofile_limit() -> int:
    """Lift this process's soft descriptor limit to its hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, target, exc)
    return soft


_process_slots: SlotCounter | None = None
_process_margin = NOFILE_MARGIN_MAX


def process_slots() -> SlotCounter:
    """The connection budget every guarded port of this process shares, made on first use."""
    global _process_slots, _process_margin
    if _process_slots is None:
        soft = raise_nofile_limit()
        _process_margin = max(NOFILE_MARGIN_MIN, min(soft // 4, NOFILE_MARGIN_MAX))
        total = max(soft - _process_margin, 16)
        _process_slots = SlotCounter(total, total, reserved=max(total // 8, 1))
    return _process_slots


def accept_batch(backlog: int) -> int:
    """The listen backlog to use: asyncio accepts up to that many sockets in one go before any is closed, so
    the batches of two listeners must fit in the descriptors kept out of the budget."""
    return max(8, min(backlog, _process_margin // 4))


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """One port's limits; the defaults suit a public HTTP port, an upgrade port sets the last two."""

    max_connections: int = 1024  # inbound connections open at once on this port
    max_per_ip: int = 32  # of those, from one stranger IP
    reserved_known: int = 64  # of max_connections, kept for known IPs
    header_timeout: float = 10.0  # accept (or the first byte after a keep-alive pause) to a request's headers
    idle_timeout: float = 120.0  # no byte in and no write drained for this long: closed
    write_timeout: float = 30.0  # unsent bytes waiting this long without any of them going out: closed
    establish_timeout: float | None = None  # accept to ``mark_established``; None: not an upgrade port
    preestablish_bytes: int | None = None  # bytes taken before ``mark_established``; None: unbounded
    backlog: int = 128  # the listen queue


@dataclass(slots=True)
class GuardStats:
    """What the guard did, for metrics (monotonic counters, and ``open`` now)."""

    accepted: int = 0
    refused_limit: int = 0  # aborted at once: a connection limit was reached
    timed_out: int = 0  # closed by a deadline
    over_budget: int = 0  # closed for sending too much before establishment
    open: int = 0
    timeouts_by_kind: dict[str, int] = field(default_factory=dict)


ProtocolFactory = Callable[[], asyncio.Protocol]


class ConnectionGuard:
    """Serves one port through ``GuardedProtocol``; ``serve`` it, ``close`` it, add ``middleware`` to the app."""

    def __init__(
        self,
        limits: GuardLimits,
        *,
        is_known: Callable[[str], bool] = lambda ip: False,
        shared: SlotCounter | None = None,
    ) -> None:
        self.limits = limits
        self.is_known = is_known
        self.slots = SlotCounter(limits.max_connections, limits.max_per_ip, limits.reserved_known)
        self.shared = shared if shared is not None else process_slots()
        self.stats = GuardStats()
        self._server: asyncio.Server | None = None
        self._open: set[GuardedProtocol] = set()

    async def serve(self, inner: ProtocolFactory, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port bound."""
        loop = asyncio.get_running_loop()
        install_accept_backoff(loop)
        install_log_bounds()
        self._server = await loop.create_server(
            lambda: GuardedProtocol(self, inner), host, port, backlog=accept_batch(self.limits.backlog),
        )
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop listening; connections already open stay to their owner (``AppRunner.cleanup``)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def abort_all(self) -> None:
        """Abort every connection still open (after the owner's graceful shutdown)."""
        for proto in list(self._open):
            proto.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        """Tells the connection's guard a request's headers arrived, and when its handler is done."""
        proto = guarded(request.transport)
        if proto is None:
            return await handler(request)
        proto.request_started()
        try:
            return await handler(request)
        finally:
            proto.request_finished()

    def _admit(self, ip: str) -> tuple[Slot, Slot] | None:
        known = self.is_known(ip)
        mine = self.slots.try_acquire(ip, known)
        if mine is None:
            return None
        process = self.shared.try_acquire(ip, known)
        if process is None:
            mine.release()
            return None
        return mine, process


def guarded(transport: asyncio.BaseTransport | None) -> GuardedProtocol | None:
    """The guard's protocol of a server-side transport, or None for one the guard does not run."""
    proto = transport.get_protocol() if transport is not None else None
    return proto if isinstance(proto, GuardedProtocol) else None


def mark_established(transport: asyncio.BaseTransport | None) -> None:
    """The connection's owner accepts it: its establishment deadline and byte budget end."""
    proto = guarded(transport)
    if proto is not None and not proto.established:
        proto._on_established()


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's limits and deadlines."""

    def __init__(self, guard: ConnectionGuard, inner: ProtocolFactory) -> None:
        self._guard = guard
        self._inner_factory = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._slots: tuple[Slot, Slot] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._active = 0  # requests whose handler is running
        self._received = 0
        self._held: bytearray | None = None  # bytes past the pre-establishment budget, read but not yet passed on
        self._progress = 0.0
        self._write_buffer = 0
        self._write_stalled: float | None = None  # since when unsent bytes have waited without draining
        self._paused = False  # the transport told us its buffer is over its high-water mark
        self._header_deadline: float | None = None
        self._establish_deadline: float | None = None
        self.established = guard.limits.establish_timeout is None
        self.ip = "?"

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport), "the guard serves stream sockets"
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        guard = self._guard
        self._slots = guard._admit(self.ip)
        if self._slots is None:
            guard.stats.refused_limit += 1
            transport.abort()
            return
        guard.stats.accepted += 1
        guard.stats.open += 1
        guard._open.add(self)
        loop = asyncio.get_running_loop()
        now = self._progress = loop.time()
        limits = guard.limits
        self._header_deadline = now + limits.header_timeout
        if limits.establish_timeout is not None:
            self._establish_deadline = now + limits.establish_timeout
        self._inner = self._inner_factory()
        self._inner.connection_made(transport)
        self._arm(loop)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        budget = self._guard.limits.preestablish_bytes
        if not self.established and budget is not None:
            data = self._within_budget(data, budget)
            if not data:
                return
        now = self._progress = asyncio.get_running_loop().time()
        if self._active == 0 and self._header_deadline is None:
            self._header_deadline = now + self._guard.limits.header_timeout
        self._inner.data_received(data)

    def _within_budget(self, data: bytes, budget: int) -> bytes:
        """The part of ``data`` aiohttp may have before establishment; the rest is held, or the connection closed."""
        if self._held is None:
            room = budget - self._received
            if len(data) <= room:
                self._received += len(data)
                return data
            # An honest peer's first messages after its side of the handshake
            # can arrive before we have read its last handshake frame: pass on
            # what fits (that frame among it), stop reading, hold the rest.
            self._received = budget
            self._held = bytearray()
            assert self._transport is not None, "data comes only after connection_made"
            self._transport.pause_reading()
            data, rest = data[:room], data[room:]
        else:
            rest, data = data, b""
        self._held += rest
        if len(self._held) > HOLD_LIMIT:
            self._guard.stats.over_budget += 1
            self.abort()
            return b""
        return data

    def _on_established(self) -> None:
        self.established = True
        held, self._held = self._held, None
        if held is not None and self._inner is not None and self._transport is not None:
            self._transport.resume_reading()
            self.data_received(bytes(held))

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        self._paused = True
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        if self._inner is not None:
            self._progress = asyncio.get_running_loop().time()
            self._write_stalled = None
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slots is not None:
            for slot in self._slots:
                slot.release()
            self._slots = None
            self._guard.stats.open -= 1
            self._guard._open.discard(self)
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.connection_lost(exc)

    # ------------------------------------------------------------ told by the owner

    def request_started(self) -> None:
        self._active += 1
        self._header_deadline = None

    def request_finished(self) -> None:
        self._active -= 1

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ deadlines

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        # Wake four times in the shorter of the two periods, to see whether the write buffer drains.
        limits = self._guard.limits
        probe = loop.time() + min(limits.idle_timeout, limits.write_timeout) / 4
        self._timer = loop.call_at(min(self._next_deadline()[0], probe), self._check)

    def _next_deadline(self) -> tuple[float, str]:
        limits = self._guard.limits
        deadlines = [(self._progress + limits.idle_timeout, "idle")]
        if self._header_deadline is not None:
            deadlines.append((self._header_deadline, "header"))
        if not self.established and self._establish_deadline is not None:
            deadlines.append((self._establish_deadline, "establish"))
        if self._write_stalled is not None:
            deadlines.append((self._write_stalled + limits.write_timeout, "write"))
        return min(deadlines)

    def _check(self) -> None:
        self._timer = None
        transport = self._transport
        if self._inner is None or transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        buffered = transport.get_write_buffer_size()
        if buffered < self._write_buffer:
            self._progress = now  # the peer is reading what we write
        # Paused, the writer adds nothing (aiohttp waits for the drain): a
        # buffer that does not shrink then is a peer that does not read,
        # whatever it sends. Unpaused, a steady buffer may just be a busy link.
        if not self._paused or buffered < self._write_buffer:
            self._write_stalled = None
        elif self._write_stalled is None:
            self._write_stalled = now
        self._write_buffer = buffered
        deadline, kind = self._next_deadline()
        if now >= deadline:
            stats = self._guard.stats
            stats.timed_out += 1
            stats.timeouts_by_kind[kind] = stats.timeouts_by_kind.get(kind, 0) + 1
            log.debug("closing %s: %s deadline passed", self.ip, kind)
            if buffered:
                transport.abort()  # what it has not read it never will
            else:
                transport.close()  # a FIN, so what the kernel still holds for a slow reader reaches it
            return
        self._arm(loop)


def install_accept_backoff(loop: asyncio.AbstractEventLoop, interval: float = ACCEPT_ERROR_INTERVAL) -> None:
    """Make the loop log descriptor exhaustion on accept once per ``interval``, with a count.

    asyncio already stops accepting on such an error and retries a second
    later; what it does not do is keep quiet: it logs every failure with a
    traceback. Other exceptions go to the handler that was there before.
    """
    if loop in _backoff_loops:
        return
    previous = loop.get_exception_handler()
    state = {"count": 0, "since": loop.time() - interval}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_ERROR:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        state["count"] += 1
        now = loop.time()
        if now - state["since"] >= interval:
            exc = context.get("exception")
            log.warning(
                "accept failed %d time(s) in the last %.0fs (%s); retrying each second",
                state["count"], now - state["since"], exc,
            )
            state["count"], state["since"] = 0, now

    loop.set_exception_handler(handler)
    _backoff_loops.add(loop)


_backoff_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
