"""Resealing: a member shares a private job's key with newcomers on its turn, one transaction at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from consensus.crypto import Keypair
from consensus.types import JOB_ACTIVE, Hash32, KeyShare, ShareDataKey, SignedTransaction
from tdml_node.node import resealer as resealer_module
from tdml_node.node.keyring import KeyRing
from tdml_node.node.resealer import RESEAL_STAGGER_BLOCKS, Resealer, reseal_order
from tdml_node.work import sealed

KEY = bytes(range(32))
MEMBERS = [Keypair.from_seed(bytes([i]) * 32) for i in (1, 2, 3)]
NEWCOMER = Keypair.from_seed(b"\x09" * 32)
JOB_ID = Hash32(b"\x01" * 32)


class RecordingIntake:
    def __init__(self) -> None:
        self.sent: list[SignedTransaction] = []

    async def submit(self, signed: SignedTransaction) -> Hash32:
        self.sent.append(signed)
        return Hash32(b"\x00" * 32)


def _job() -> Any:
    spec = SimpleNamespace(dataset=Hash32(b"\xda" * 32), private=True)
    shares = tuple(KeyShare(m.public_key, sealed.seal_key(KEY, m.public_key)) for m in MEMBERS)
    return SimpleNamespace(job_id=JOB_ID, spec=spec, status=JOB_ACTIVE, key_shares=shares)


def _state(height: int) -> Any:
    return SimpleNamespace(
        jobs={JOB_ID: _job()}, height=height, chain_id="tdml-test", get_account=lambda a: SimpleNamespace(nonce=7)
    )


def _resealer(me: Keypair) -> tuple[Resealer, list[SignedTransaction]]:
    ring = KeyRing(me)
    ring.attach(lambda: _state(0))
    intake = RecordingIntake()
    tasks: list[Coroutine[Any, Any, None]] = []
    r = Resealer(keypair=me, keyring=ring, intake=intake, spawn=lambda c, name: tasks.append(c))  # type: ignore[arg-type]
    r.run_spawned = lambda: [asyncio.run(c) for c in tasks] and tasks.clear()  # type: ignore[attr-defined]
    return r, intake.sent


def test_members_take_turns_and_the_first_in_turn_seals_the_key_to_the_newcomer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resealer_module, "wanted_members", lambda state: [m.public_key for m in MEMBERS] + [NEWCOMER.public_key])
    order = reseal_order(_job(), NEWCOMER.public_key)
    first, second = (next(m for m in MEMBERS if m.public_key == k) for k in order[:2])
    r1, sent1 = _resealer(first)
    r2, sent2 = _resealer(second)
    for height in (10, 11):
        for r in (r1, r2):
            r.on_commit(SimpleNamespace(state=_state(height)))  # type: ignore[arg-type]
            r.run_spawned()  # type: ignore[attr-defined]
    assert len(sent1) == 1 and not sent2  # the second waits its turn, the first does not repeat itself at once
    tx = sent1[0].tx
    assert isinstance(tx.payload, ShareDataKey) and tx.nonce == 7 and tx.sender == first.public_key
    (share,) = tx.payload.shares
    assert share.recipient == NEWCOMER.public_key and sealed.open_key(share.sealed_key, NEWCOMER.signing_key) == KEY
    # Still missing RESEAL_STAGGER_BLOCKS later (the first member's transaction never landed): the next one steps in.
    r2.on_commit(SimpleNamespace(state=_state(10 + RESEAL_STAGGER_BLOCKS)))  # type: ignore[arg-type]
    r2.run_spawned()  # type: ignore[attr-defined]
    assert len(sent2) == 1


def test_a_node_that_is_no_member_or_has_nobody_to_add_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resealer_module, "wanted_members", lambda state: [m.public_key for m in MEMBERS])
    r, sent = _resealer(MEMBERS[0])
    r.on_commit(SimpleNamespace(state=_state(50)))  # type: ignore[arg-type]
    monkeypatch.setattr(resealer_module, "wanted_members", lambda state: [NEWCOMER.public_key])
    outsider, sent_out = _resealer(Keypair.from_seed(b"\x0a" * 32))
    outsider.on_commit(SimpleNamespace(state=_state(50)))  # type: ignore[arg-type]
    r.run_spawned()  # type: ignore[attr-defined]
    outsider.run_spawned()  # type: ignore[attr-defined]
    assert not sent and not sent_out
