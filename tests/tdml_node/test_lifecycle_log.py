"""The node's INFO story in-process: heartbeat and no-peer warnings (rate-limited), and sync progress lines."""

from __future__ import annotations

import asyncio
import logging

import pytest

from consensus.crypto import Keypair, address_of
from consensus.transition import make_genesis_state
from consensus.types import (
    PREVOTE,
    Block,
    BlockBody,
    BlockHeader,
    CommitCertificate,
    Equivocation,
    Hash32,
    Height,
    PublicKey,
    Round,
    Signature,
    SignedVote,
    Vote,
)
from tdml_node.client import make_register
from tdml_node.genesis import compose_genesis
from tdml_node.node.lifecycle import (
    BlockEvents,
    can_commit_alone,
    describe_block,
    warn_without_bootstrap,
    watch,
)
from tdml_node.node.sync import LOG_MIN_BLOCKS, PROGRESS_SECONDS, SYNC_BATCH, SyncProgress
from tdml_node.runtime.views import ChainHead, CommittedBlock


def _chain(validators: int) -> tuple[ChainHead, bytes]:
    keys = [Keypair.generate() for _ in range(validators)]
    genesis = compose_genesis("tdml-test", [(PublicKey(k.public_key), f"127.0.0.1:{i + 1}") for i, k in enumerate(keys)])
    return ChainHead(genesis.chain_id, make_genesis_state(genesis, None)), keys[0].public_key


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tdml.lifecycle" and r.levelno == level]


def _watch_for(seconds: float, chain: ChainHead, me: bytes, peers: list[int]) -> None:
    async def main() -> None:
        task = asyncio.create_task(watch(chain, me, lambda: peers[0], lambda: 0, heartbeat_s=0.1, no_peers_warn_s=0.3))
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_lone_node_that_cannot_commit_is_warned_now_and_then(caplog: pytest.LogCaptureFixture) -> None:
    chain, me = _chain(2)
    assert not can_commit_alone(chain, me)
    caplog.set_level(logging.INFO, "tdml.lifecycle")
    _watch_for(1.5, chain, me, [0])
    warnings = _messages(caplog, logging.WARNING)
    # Every 0.3 s at most, from 0.3 s on: between 1 and 5 in 1.5 s, never one per tick.
    assert 1 <= len(warnings) <= 5, warnings
    assert all("no peers connected" in w for w in warnings)
    beats = [r for r in caplog.records if r.getMessage() == "heartbeat"]
    assert beats and all(vars(r)["peers"] == 0 and vars(r)["height"] == 0 for r in beats)


def test_peers_or_a_quorum_of_ones_own_silence_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tdml.lifecycle")
    chain, me = _chain(2)
    _watch_for(0.8, chain, me, [1])
    solo, solo_key = _chain(1)
    assert can_commit_alone(solo, solo_key)
    _watch_for(0.8, solo, solo_key, [0])
    warn_without_bootstrap(solo, solo_key, ())
    warn_without_bootstrap(chain, me, ("127.0.0.1:1",))
    assert _messages(caplog, logging.WARNING) == []
    warn_without_bootstrap(chain, me, ())
    assert _messages(caplog, logging.WARNING) == [
        "no bootstrap peers configured; this node will sit at height 0 until a peer connects — pass --bootstrap host:port"
    ]


def test_a_long_sync_reports_a_handful_of_lines_with_percent_and_rate() -> None:
    target = 131
    progress = SyncProgress(0, target, started_at=0.0)
    reports = []
    for height in range(0, target, SYNC_BATCH):  # the syncer notes its height before each batch
        if height and progress.should_report(height, now=height / 100):
            reports.append(progress.report(height, now=height / 100))
    assert [r["percent"] for r in reports] == [48, 97]
    assert reports[0]["blocks_per_s"] == pytest.approx(100.0)
    assert target >= LOG_MIN_BLOCKS


def test_a_slow_sync_reports_every_few_seconds_between_tenths() -> None:
    progress = SyncProgress(0, 10_000, started_at=0.0)
    assert not progress.should_report(1, now=PROGRESS_SECONDS / 2)
    assert progress.should_report(1, now=PROGRESS_SECONDS)
    progress.report(1, now=PROGRESS_SECONDS)
    assert progress.should_report(1_001, now=PROGRESS_SECONDS + 0.1)  # another tenth of the way


def _vote(key: bytes, block: bytes) -> SignedVote:
    return SignedVote(Vote(PREVOTE, Height(4), Round(0), Hash32(block), PublicKey(key)), Signature(bytes(64)))


def test_a_block_tells_its_registrations_and_slashings(caplog: pytest.LogCaptureFixture) -> None:
    chain, _ = _chain(1)
    joiner, cheat = Keypair.generate(), Keypair.generate()
    body = BlockBody(
        transactions=(make_register(joiner, "tdml-test", 0, stake=500, roles=1),),
        submissions=(), verdicts=(),
        evidence=(Equivocation(_vote(cheat.public_key, b"a" * 32), _vote(cheat.public_key, b"b" * 32)),),
        outcomes=(), last_commit=None,
    )
    zero = Hash32(bytes(32))
    header = BlockHeader("tdml-test", Height(5), Round(0), zero, PublicKey(joiner.public_key), zero, zero, 5000)
    committed = CommittedBlock(Block(header, body), zero, CommitCertificate(Height(5), Round(0), zero, ()), chain.state)
    events = list(describe_block(committed))
    assert [(e.msg, e.level) for e in events] == [("node registered", logging.INFO), ("slashed", logging.WARNING)]
    assert events[0].fields == {"address": address_of(joiner.public_key), "stake": 500, "roles": 1, "height": 5}
    assert events[1].fields == {"offender": address_of(cheat.public_key), "kind": "equivocation", "height": 5}
    caplog.set_level(logging.INFO, "tdml.lifecycle")
    BlockEvents()(committed)
    assert [r.getMessage() for r in caplog.records] == ["node registered", "slashed"]  # "committed" is DEBUG
    caplog.clear()
    caplog.set_level(logging.DEBUG, "tdml.lifecycle")
    BlockEvents()(committed)
    assert [r.getMessage() for r in caplog.records] == ["committed", "node registered", "slashed"]
