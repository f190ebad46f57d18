"""The double-sign guard: persisted before signing, survives reopening the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.crypto import DOMAIN_VOTE, Keypair, verify_value
from consensus.types import PRECOMMIT, PREVOTE, Hash32, Height, Round, Vote
from tdml_node.node.privval import DoubleSignRefused, PrivValidator
from tdml_node.storage import ChainStore


def _vote(kp: Keypair, kind: int, h: int, r: int, block: bytes | None) -> Vote:
    return Vote(kind, Height(h), Round(r), Hash32(block) if block else None, kp.public_key)


def test_refuses_conflicting_and_older_votes_across_restarts(tmp_path: Path) -> None:
    kp = Keypair.generate()
    store = ChainStore(tmp_path / "db")
    pv = PrivValidator(store, kp, "c")
    v1 = _vote(kp, PREVOTE, 5, 0, b"a" * 32)
    sig = pv.sign_vote(v1)
    assert verify_value(kp.public_key, DOMAIN_VOTE, "c", v1, sig)
    store.close()

    store = ChainStore(tmp_path / "db")
    pv = PrivValidator(store, kp, "c")
    assert pv.last_signed() == (5, 0, 1)
    assert pv.sign_vote(v1) == sig  # the same vote again: a restart re-sending it
    with pytest.raises(DoubleSignRefused):
        pv.sign_vote(_vote(kp, PREVOTE, 5, 0, b"b" * 32))
    with pytest.raises(DoubleSignRefused):
        pv.sign_vote(_vote(kp, PREVOTE, 5, 0, None))
    with pytest.raises(DoubleSignRefused):
        pv.sign_vote(_vote(kp, PREVOTE, 4, 9, b"a" * 32))
    pv.sign_vote(_vote(kp, PRECOMMIT, 5, 0, b"a" * 32))
    pv.sign_vote(_vote(kp, PREVOTE, 5, 1, None))
    assert pv.last_signed() == (5, 1, 1)
    # An earlier message of this height, identical, is re-signed (write-ahead log replay).
    assert pv.sign_vote(v1) == sig
    replayed = pv.replay(5)
    assert [s.vote.kind for s in replayed] == [PREVOTE, PRECOMMIT, PREVOTE]  # type: ignore[union-attr]
    assert replayed[0].signature == sig
    pv.sign_vote(_vote(kp, PREVOTE, 6, 0, None))
    assert pv.replay(5) == []  # older heights are dropped once a new height is signed
    store.close()
