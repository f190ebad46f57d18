"""Peers' consensus messages cannot grow the node's inbox without bound; the node's own events always get in."""

from __future__ import annotations

from pathlib import Path

from consensus import crypto
from consensus.crypto import Keypair
from consensus.tendermint import TimeoutElapsed
from consensus.types import PREVOTE, SignedVote, Vote
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.node import open_node
from tdml_node.node.peer_gate import PEER_INBOX_LIMIT


async def test_a_vote_flood_stops_at_the_bound_and_is_counted(tmp_path: Path) -> None:
    key, flooder = Keypair.generate(), Keypair.generate()
    genesis = compose_genesis("gate-test", [(key.public_key, "")])
    config = NodeConfig(home=tmp_path, rpc_port=0, dev=True)
    async with open_node(config, key, genesis) as node:
        # The loop is not running, so nothing drains the inbox: the flood meets the bound.
        vote = Vote(PREVOTE, 1, 0, None, flooder.public_key)
        signed = SignedVote(vote, flooder.sign_value(crypto.DOMAIN_VOTE, "gate-test", vote))
        extra = 50
        for _ in range(PEER_INBOX_LIMIT + extra):
            await node.parts.handlers.on_gossip(signed, b"\x01" * 32)
        assert node.inbox.qsize() == PEER_INBOX_LIMIT
        dropped = node.parts.metrics.registry.get_sample_value("tdml_peer_messages_dropped_total")
        assert dropped == extra
        node.inbox.put_nowait(TimeoutElapsed(1, 0, 0))
        assert node.inbox.qsize() == PEER_INBOX_LIMIT + 1
