"""The address book: known peer addresses, peer scores, bans and reconnection back-off.

Addresses come from the bootstrap list, from peer exchange and from the
listen address peers announce in their handshake. Each address has a
back-off: after ``n`` failed attempts in a row it is not dialled again for
``min(backoff_max, backoff_min * 2**(n-1))`` seconds, stretched by a jitter
factor in [1, 1.5) that is a hash of the address and ``n`` (so two nodes do
not retry in lockstep, and a test sees the same delays every run).

A peer's score starts at 0, drops by the severity of each violation and
creeps back towards 0 with time. At or below ``ban_threshold`` the peer is
banned for ``ban_duration`` seconds, by node key and by address: the key
stops it reconnecting to us, the address stops us dialling it. An address is
tied to a key only when we dialled that address and the handshake proved the
key there, so a peer cannot get an honest node's address banned by claiming
it. A ban that runs out leaves the peer with a clean score.

This module must never do I/O, read a clock or draw randomness: time comes
in as ``now``, and jitter is a hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from consensus.types import PublicKey

DEFAULT_BAN_THRESHOLD = -100.0
DEFAULT_BAN_DURATION = 600.0
DEFAULT_BACKOFF_MIN = 0.5
DEFAULT_BACKOFF_MAX = 60.0
DEFAULT_SCORE_RECOVERY = 0.1
"""Score points a peer regains per second (one major violation is forgiven in 200 s)."""
DEFAULT_MAX_ADDRESSES = 2000
MAX_UNVERIFIED_FAILURES = 8
"""An address learned from others that failed this many times in a row is forgotten."""

SOURCE_BOOTSTRAP = "bootstrap"
SOURCE_PEX = "pex"
SOURCE_HANDSHAKE = "handshake"

_K = TypeVar("_K", bytes, str)

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def parse_addr(addr: str) -> tuple[str, int] | None:
    """``(host, port)`` of a dialable ``host:port`` or ``[v6]:port``; None when it is not one."""
    if addr.startswith("["):
        host, sep, port_text = addr[1:].partition("]:")
        if not sep or _ip_of(host) is None:
            return None
    else:
        host, sep, port_text = addr.rpartition(":")
        if not sep or not _HOSTNAME.match(host):
            return None
    ip = _ip_of(host)
    # 0.0.0.0 and :: name "every interface" to a listener, and no one to a dialler.
    if ip is not None and ip.is_unspecified:
        return None
    if not port_text.isdigit() or port_text != str(int(port_text)) or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def _ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_dialable(addr: str) -> bool:
    return parse_addr(addr) is not None


def format_addr(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (the form ``parse_addr`` reads)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class AddressInfo:
    """What the book knows of one address (mutable bookkeeping, not a protocol value)."""

    addr: str
    source: str
    failures: int = 0
    next_attempt: float = 0.0
    verified: bool = False
    """We dialled it and a handshake completed there."""
    node_key: PublicKey | None = None
    """The key a handshake proved at this address (only set when ``verified``)."""


@dataclass(slots=True)
class _Score:
    value: float
    updated: float


class PeerBook:
    """Addresses to dial, peer scores and bans; every method takes the time it runs at."""

    def __init__(
        self,
        *,
        ban_threshold: float = DEFAULT_BAN_THRESHOLD,
        ban_duration: float = DEFAULT_BAN_DURATION,
        backoff_min: float = DEFAULT_BACKOFF_MIN,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        score_recovery: float = DEFAULT_SCORE_RECOVERY,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        jitter_seed: bytes = b"",
    ) -> None:
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        self.ban_threshold = ban_threshold
        self.ban_duration = ban_duration
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.score_recovery = score_recovery
        self.max_addresses = max_addresses
        self.jitter_seed = jitter_seed
        self._addrs: dict[str, AddressInfo] = {}
        self._own: set[str] = set()
        self._scores: dict[bytes, _Score] = {}
        self._banned_keys: dict[bytes, float] = {}
        self._banned_addrs: dict[str, float] = {}

    # ------------------------------------------------------------ addresses

    def add_own_address(self, addr: str) -> None:
        """An address that reaches this node itself: never dialled, never shared."""
        self._own.add(addr)
        self._addrs.pop(addr, None)

    def is_own_address(self, addr: str) -> bool:
        return addr in self._own

    def add_address(self, addr: str, source: str) -> bool:
        """Learn an address; False when it is not dialable, our own, or the book is full."""
        if addr in self._addrs:
            if source == SOURCE_BOOTSTRAP:
                self._addrs[addr].source = SOURCE_BOOTSTRAP
            return False
        if addr in self._own or not is_dialable(addr):
            return False
        if len(self._addrs) >= self.max_addresses and not self._evict_one():
            return False
        self._addrs[addr] = AddressInfo(addr, source)
        return True

    def forget(self, addr: str) -> None:
        self._addrs.pop(addr, None)

    def get_address(self, addr: str) -> AddressInfo | None:
        return self._addrs.get(addr)

    def known_addresses(self) -> list[str]:
        return sorted(self._addrs)

    def addresses_to_dial(
        self,
        now: float,
        *,
        exclude_addrs: Collection[str] = (),
        exclude_keys: Collection[bytes] = (),
        limit: int | None = None,
    ) -> list[str]:
        """Addresses due for a dial: not excluded, not banned, back-off elapsed; fewest failures first.

        ``exclude_addrs`` are those connected or being dialled; ``exclude_keys``
        the keys already connected, whose verified addresses need no second dial.
        """
        due = [
            info
            for info in self._addrs.values()
            if info.next_attempt <= now
            and info.addr not in exclude_addrs
            and not (info.node_key is not None and info.node_key in exclude_keys)
            and not self.is_banned(now, addr=info.addr, node_key=info.node_key)
        ]
        due.sort(key=lambda i: (i.failures, i.source != SOURCE_BOOTSTRAP, i.addr))
        chosen = [i.addr for i in due]
        return chosen if limit is None else chosen[:limit]

    def shareable_addresses(self, now: float, limit: int) -> list[str]:
        """Addresses we would tell other peers about: verified and not banned."""
        out = [
            i.addr
            for i in self._addrs.values()
            if i.verified and not self.is_banned(now, addr=i.addr, node_key=i.node_key)
        ]
        return sorted(out)[:limit]

    def record_verified(self, addr: str, node_key: PublicKey) -> None:
        """A dial to ``addr`` completed a handshake with ``node_key``: the address is real.

        The failure count is left alone until the connection proves stable
        (``record_success``), so a peer that accepts and at once drops us
        still backs off.
        """
        info = self._addrs.get(addr)
        if info is None:
            if addr in self._own or not is_dialable(addr):
                return
            info = AddressInfo(addr, SOURCE_HANDSHAKE)
            self._addrs[addr] = info
        info.verified = True
        info.node_key = node_key

    def record_success(self, addr: str, now: float, node_key: PublicKey | None = None) -> None:
        """A connection to ``addr`` worked: clear its back-off (and verify it, given the key)."""
        if node_key is not None:
            self.record_verified(addr, node_key)
        info = self._addrs.get(addr)
        if info is not None:
            info.failures = 0
            info.next_attempt = now

    def record_failure(self, addr: str, now: float) -> float:
        """A dial to ``addr`` failed (or ended at once); returns the back-off before the next try."""
        info = self._addrs.get(addr)
        if info is None:
            return 0.0
        info.failures += 1
        if not info.verified and info.source != SOURCE_BOOTSTRAP and info.failures >= MAX_UNVERIFIED_FAILURES:
            del self._addrs[addr]
            return 0.0
        delay = self.compute_backoff(addr, info.failures)
        info.next_attempt = now + delay
        return delay

    def compute_backoff(self, addr: str, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (0 for none)."""
        if failures <= 0:
            return 0.0
        base = min(self.backoff_max, self.backoff_min * 2.0 ** min(failures - 1, 64))
        digest = hashlib.sha256(self.jitter_seed + addr.encode() + failures.to_bytes(8, "big")).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        return min(self.backoff_max, base * (1.0 + 0.5 * fraction))

    def _evict_one(self) -> bool:
        """Make room by dropping the worst address learned from others; False if none may go."""
        candidates = [i for i in self._addrs.values() if i.source != SOURCE_BOOTSTRAP and not i.verified]
        if not candidates:
            return False
        worst = max(candidates, key=lambda i: (i.failures, i.addr))
        del self._addrs[worst.addr]
        return True

    # ------------------------------------------------------------ scores and bans

    def get_score(self, node_key: bytes, now: float) -> float:
        entry = self._scores.get(node_key)
        if entry is None:
            return 0.0
        self._recover(entry, now)
        return entry.value

    def penalize(self, node_key: bytes, severity: float, now: float, addr: str | None = None) -> bool:
        """Lower a peer's score; True when this bans it (by key, and by ``addr`` if given)."""
        entry = self._scores.setdefault(node_key, _Score(0.0, now))
        self._recover(entry, now)
        entry.value -= severity
        if entry.value > self.ban_threshold:
            return False
        self.ban(now, node_key=node_key, addr=addr)
        return True

    def ban(self, now: float, *, node_key: bytes | None = None, addr: str | None = None) -> None:
        until = now + self.ban_duration
        if node_key is not None:
            self._banned_keys[node_key] = until
            self._scores.pop(node_key, None)
            for info in self._addrs.values():
                if info.node_key == node_key:
                    self._banned_addrs[info.addr] = until
        if addr is not None:
            self._banned_addrs[addr] = until

    def is_banned(self, now: float, *, node_key: bytes | None = None, addr: str | None = None) -> bool:
        if node_key is not None and self._ban_active(self._banned_keys, node_key, now):
            return True
        return addr is not None and self._ban_active(self._banned_addrs, addr, now)

    def banned_keys(self, now: float) -> list[bytes]:
        """Node keys banned now."""
        return [k for k in list(self._banned_keys) if self.is_banned(now, node_key=k)]

    def banned_until(self, node_key: bytes, now: float) -> float | None:
        return self._banned_keys.get(node_key) if self.is_banned(now, node_key=node_key) else None

    @staticmethod
    def _ban_active(bans: dict[_K, float], key: _K, now: float) -> bool:
        until = bans.get(key)
        if until is None:
            return False
        if until <= now:
            del bans[key]
            return False
        return True

    def _recover(self, entry: _Score, now: float) -> None:
        if now > entry.updated:
            entry.value = min(0.0, entry.value + (now - entry.updated) * self.score_recovery)
            entry.updated = now
