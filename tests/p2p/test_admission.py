"""Admission: which IPs are known (bootstrap hosts, verified addresses), and the exact pending-handshake caps."""

from __future__ import annotations

from p2p_fixtures import keypair

from p2p.admission import KNOWN_IPS_TTL, Admission, listener_limits
from p2p.peers import SOURCE_PEX, PeerBook
from p2p.settings import NetworkConfig

CONFIG = NetworkConfig(max_pending_handshakes=6, max_pending_handshakes_per_ip=2, reserved_pending_handshakes=2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bootstrap_hosts_and_verified_addresses_are_known_gossiped_ones_are_not() -> None:
    book, clock = PeerBook(), Clock()
    admission = Admission(CONFIG, ("10.0.0.1:26656", "seed.example:26656"), book, clock)
    book.add_address("10.0.0.2:26656", SOURCE_PEX)
    assert admission.is_known("10.0.0.1")
    assert not admission.is_known("10.0.0.2")  # only heard of
    book.record_verified("10.0.0.2:26656", keypair(1).public_key)
    assert not admission.is_known("10.0.0.2")  # the set is reused for a while ...
    clock.now += KNOWN_IPS_TTL
    assert admission.is_known("10.0.0.2")  # ... then worked out again


def test_strangers_get_the_unreserved_slots_with_a_per_ip_cap_and_known_ips_the_rest() -> None:
    admission = Admission(CONFIG, ("10.0.0.1:1",), PeerBook(), Clock())
    strangers = [admission.admit(f"192.0.2.{i % 3}") for i in range(9)]
    held = [s for s in strangers if s is not None]
    assert len(held) == 4  # 6 less 2 reserved; 2 per IP would allow 6
    assert admission.admit("10.0.0.1") and admission.admit("10.0.0.1")  # the reserve, and no per-IP cap
    assert admission.admit("10.0.0.1") is None  # the total is exact
    for slot in held:
        slot.release()
        slot.release()
    assert admission.pending.count == 2


def test_the_guard_gets_the_upgrade_deadline_plus_the_handshake_timeout() -> None:
    limits = listener_limits(NetworkConfig(header_timeout=3.0, handshake_timeout=7.0, preestablish_bytes=1000))
    assert limits.establish_timeout == 10.0 and limits.preestablish_bytes == 1000 and limits.header_timeout == 3.0
