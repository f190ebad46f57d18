"""Who may open an inbound p2p connection: the guard's limits, and exact pending-handshake slots.

A connection takes a pending-handshake slot before its websocket upgrade
and gives it back when its handshake completes or it ends, so at most
``max_pending_handshakes`` inbound connections are ever in their
handshake, at most ``max_pending_handshakes_per_ip`` of them from one IP
we do not know. Known IPs (the hosts of bootstrap addresses and of
addresses a handshake verified) may use ``reserved_pending_handshakes``
slots no stranger can take, so a flood cannot lock real peers out.

This module must never do I/O or read a clock of its own: the network
passes its clock in.
"""

from __future__ import annotations

from collections.abc import Callable

from p2p.guard import GuardLimits, Slot, SlotCounter
from p2p.peers import PeerBook, parse_addr
from p2p.settings import NetworkConfig

KNOWN_IPS_TTL = 1.0
"""Seconds the set of known IPs is reused before it is worked out again (it is asked on every accept)."""


def listener_limits(cfg: NetworkConfig) -> GuardLimits:
    """The connection guard's limits for the p2p port: the upgrade within ``header_timeout``, then the handshake."""
    return GuardLimits(
        max_connections=cfg.max_inbound_connections,
        max_per_ip=cfg.max_inbound_per_ip,
        reserved_known=cfg.reserved_inbound_connections,
        header_timeout=cfg.header_timeout,
        idle_timeout=cfg.idle_timeout,
        write_timeout=cfg.write_timeout,
        establish_timeout=cfg.header_timeout + cfg.handshake_timeout,
        preestablish_bytes=cfg.preestablish_bytes,
    )


class Admission:
    """Pending-handshake slots and the known-IP test, for one network."""

    def __init__(self, cfg: NetworkConfig, bootstrap: tuple[str, ...], book: PeerBook, now: Callable[[], float]) -> None:
        self.pending = SlotCounter(
            cfg.max_pending_handshakes, cfg.max_pending_handshakes_per_ip, cfg.reserved_pending_handshakes,
        )
        self._bootstrap = bootstrap
        self._book = book
        self._now = now
        self._known: frozenset[str] = frozenset()
        self._known_at = float("-inf")

    def admit(self, ip: str) -> Slot | None:
        """A pending-handshake slot for a connection from ``ip``, or None when the caps are reached."""
        return self.pending.try_acquire(ip, self.is_known(ip))

    def is_known(self, ip: str) -> bool:
        """Whether ``ip`` is the host of a bootstrap address or of an address a handshake verified.

        Host names are not resolved: a bootstrap peer given by name gets no reserved slot.
        """
        now = self._now()
        if now - self._known_at >= KNOWN_IPS_TTL:
            hosts = set()
            for addr in (*self._bootstrap, *self._book.known_addresses()):
                info = self._book.get_address(addr)
                parsed = parse_addr(addr)
                if parsed is not None and (addr in self._bootstrap or (info is not None and info.verified)):
                    hosts.add(parsed[0])
            self._known, self._known_at = frozenset(hosts), now
        return ip in self._known
