"""The key ring opens this node's own share of a private job's key, and nobody else's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from consensus.crypto import Keypair
from consensus.types import Hash32, KeyShare
from tdml_node.node.keyring import KeyRing
from tdml_node.work import sealed

ME = Keypair.from_seed(b"\x11" * 32)
OTHER = Keypair.from_seed(b"\x12" * 32)
KEY = bytes(range(32))
DATASET = Hash32(b"\xda" * 32)


def _state(shares: tuple[KeyShare, ...], *, private: bool = True) -> Any:
    spec = SimpleNamespace(dataset=DATASET, private=private)
    return SimpleNamespace(jobs={Hash32(b"\x01" * 32): SimpleNamespace(spec=spec, key_shares=shares)})


def _share(to: Keypair, key: bytes = KEY) -> KeyShare:
    return KeyShare(to.public_key, sealed.seal_key(key, to.public_key))


def test_a_member_opens_its_own_share_and_keeps_the_key_in_memory() -> None:
    ring = KeyRing(ME)
    spec: Any = SimpleNamespace(dataset=DATASET, private=True)
    assert ring.key_for(spec) is None  # no state yet
    state = _state((_share(OTHER), KeyShare(ME.public_key, b"\x00" * sealed.SEALED_KEY_BYTES), _share(ME)))
    ring.attach(lambda: state)
    assert ring.key_for(spec) == KEY  # the garbage share addressed to it is skipped, the good one opens
    state.jobs.clear()
    assert ring.holds(spec)  # opened once, remembered


def test_a_node_without_a_share_of_its_own_gets_no_key() -> None:
    ring = KeyRing(ME)
    ring.attach(lambda: _state((_share(OTHER),)))
    assert ring.key_for(SimpleNamespace(dataset=DATASET, private=True)) is None  # type: ignore[arg-type]
    public = KeyRing(ME)
    public.attach(lambda: _state((_share(ME),), private=False))
    assert public.key_for(SimpleNamespace(dataset=DATASET, private=True)) is None  # type: ignore[arg-type]
