"""What the peer-to-peer network calls on this node: gossip in, blobs and blocks out, new peers.

Consensus messages go to the node's inbox (one loop feeds them to the
core, in order); transactions to the intake; units and verdicts to the
duties. A peer's bad input is answered through the fault table
(``runtime.faults``), by the kind of error the rules raised. A peer that
connects mid-height is caught up with this node's own signed messages of
the height and its pending work, since gossip is not repeated.

This module must never decide whether a message is valid: the core, the
intake and the duties do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from consensus.codec import encode
from consensus.tendermint import ProposalReceived, VoteReceived
from consensus.types import (
    Equivocation,
    FalsePass,
    FalseVerdict,
    Hash32,
    PublicKey,
    SignedProposal,
    SignedTransaction,
    SignedVerdict,
    SignedVote,
    SignedWorkSubmission,
    WorkFraud,
)
from p2p.messages import GossipPayload
from tdml_node.duties import Duties
from tdml_node.node.intake import TransactionIntake
from tdml_node.node.privval import PrivValidator
from tdml_node.node.timeliness import TimelinessCheck
from tdml_node.pools import TxRejected, WorkPool
from tdml_node.runtime.faults import penalise
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.seams import Seams
from tdml_node.runtime.views import ChainView
from tdml_node.storage import ChainStore

log = logging.getLogger("tdml.node")


@dataclass(frozen=True, slots=True)
class FromPeer:
    """A consensus message that arrived from a peer (relayed onward if the core accepts it)."""

    event: ProposalReceived | VoteReceived
    peer: bytes


def as_event(signed: SignedProposal | SignedVote) -> ProposalReceived | VoteReceived:
    return ProposalReceived(signed) if isinstance(signed, SignedProposal) else VoteReceived(signed)


class PeerHandlers:
    """The node as ``p2p.network.NetworkHandler`` sees it."""

    def __init__(
        self,
        *,
        node_key: PublicKey,
        chain: ChainView,
        store: ChainStore,
        seams: Seams,
        network: Network,
        privval: PrivValidator,
        workpool: WorkPool,
        intake: TransactionIntake,
        duties: Duties,
        to_inbox: Callable[[FromPeer], object],
        timeliness: TimelinessCheck,
    ) -> None:
        self.node_key = node_key
        self.chain = chain
        self.store = store
        self.seams = seams
        self.network = network
        self.privval = privval
        self.workpool = workpool
        self.intake = intake
        self.duties = duties
        self._to_inbox = to_inbox
        self.timeliness = timeliness

    async def on_gossip(self, payload: GossipPayload, peer_id: bytes) -> None:
        if isinstance(payload, SignedProposal):
            # Timeliness is judged on arrival, not when the inbox gets to it.
            self._to_inbox(FromPeer(self.timeliness.mark(ProposalReceived(payload)), peer_id))
        elif isinstance(payload, SignedVote):
            self._to_inbox(FromPeer(as_event(payload), peer_id))
        elif isinstance(payload, SignedTransaction):
            try:
                await self.intake.submit(payload, origin=peer_id)
            except TxRejected as exc:
                penalise(self.network, peer_id, "transaction", exc)
        elif isinstance(payload, SignedWorkSubmission):
            await self.duties.on_submission(payload, origin=peer_id)
        elif isinstance(payload, SignedVerdict):
            await self.duties.on_verdict(payload, origin=peer_id)
        elif isinstance(payload, WorkFraud | FalseVerdict | FalsePass | Equivocation):
            log.debug("evidence gossip is not needed: validators judge failing verdicts themselves")

    def get_blob(self, digest: Hash32) -> bytes | None:
        return self.seams.serve_blob(digest, self.store.get)

    def get_blocks(self, start: int, count: int) -> list[tuple[bytes, bytes]]:
        out = []
        for height in range(start, min(start + count, self.chain.state.height + 1)):
            block = self.store.get_block_bytes(height)
            commit = self.store.get_commit(height)
            if block is None or commit is None:
                break
            out.append((block, encode(commit)))
        return out

    def status(self) -> tuple[int, Hash32]:
        state = self.chain.state
        return state.height, state.tip_hash

    def on_peer_connected(self, peer_id: bytes) -> None:
        """Catch a new peer up: our signed messages of the height in progress and our pending work.

        A peer that restarted has seen none of them, and gossip is not repeated.
        """
        self._send_own_votes(peer_id)
        me = self.node_key
        for _, entry in self.workpool.entries():
            if entry.signed.submission.trainer == me:
                self.network.send_to(peer_id, entry.signed)
            if me in entry.verdicts:
                self.network.send_to(peer_id, entry.verdicts[me])

    def on_peer_status(self, peer_id: bytes, height: int) -> None:
        """Catch up a peer that has just committed our height: our signed messages of the height in progress.

        It may have dropped them while it lagged further behind (the node keeps
        only a few heights ahead), and without them a height that needs its vote
        would never end.
        """
        if height == self.chain.state.height:
            self._send_own_votes(peer_id)

    def _send_own_votes(self, peer_id: bytes) -> None:
        for signed in self.privval.replay(self.chain.state.height + 1):
            self.network.send_to(peer_id, signed)
