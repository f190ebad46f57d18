"""The peer-to-peer wire messages, their size limits, and framing.

Every message between two nodes is one of the frozen dataclasses below,
registered with ``consensus.codec`` under tags 100-139 (consensus uses tags
below 100), and travels as one websocket binary frame holding its canonical
bytes. A frame is decoded strictly and bounded in three steps: its length is
checked against the largest limit of any message, it is decoded as a
``WireMessage`` with that bound, and then its length is checked against the
limit of the message's own category (handshake, gossip, blob, blocks,
control), so a peer cannot use the room a block range needs to send a
megabyte of handshake.

This module must never do I/O, keep state, or interpret what a message
means: that is for ``session`` (the handshake) and ``network`` (everything
after it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, NewType

from consensus.codec import (
    DecodeError,
    EncodeError,
    IntRange,
    MaxLen,
    decode,
    encode,
    message,
    register_scalar,
)
from consensus.types import (
    Equivocation,
    FalsePass,
    FalseVerdict,
    Hash32,
    Height,
    PublicKey,
    Signature,
    SignedProposal,
    SignedTransaction,
    SignedVerdict,
    SignedVote,
    SignedWorkSubmission,
    WorkFraud,
)

KiB = 1024
MiB = 1024 * KiB

# Per-category frame limits (bytes of one encoded message).
HANDSHAKE_LIMIT = 4 * KiB
GOSSIP_LIMIT = 8 * MiB
"""A proposal carries a whole block, so gossip gets the room of the largest block."""
BLOB_CHUNK_SIZE = 512 * KiB
"""The size of the chunks a node asks for; the wire allows up to ``MAX_BLOB_CHUNK``."""
MAX_BLOB_CHUNK = 1 * MiB
BLOB_LIMIT = MAX_BLOB_CHUNK + 4 * KiB
"""One chunk plus the envelope (tag, request id, digest, offsets)."""
BLOCKS_LIMIT = 16 * MiB
CONTROL_LIMIT = 64 * KiB
MAX_FRAME = max(HANDSHAKE_LIMIT, GOSSIP_LIMIT, BLOB_LIMIT, BLOCKS_LIMIT, CONTROL_LIMIT)
"""The largest frame of any kind: the transport's websocket message limit."""

MAX_BLOCK_BYTES = GOSSIP_LIMIT
MAX_COMMIT_BYTES = 256 * KiB
"""A commit certificate of 256 validators is about 26 KiB; the rest is headroom."""
MAX_BLOCKS_PER_REQUEST = 128
MAX_PEERS_PER_MESSAGE = 64
MAX_ADDR_LEN = 256
MAX_REASON_LEN = 256
MAX_CHAIN_ID_LEN = 64
CHALLENGE_LEN = 32

Challenge = NewType("Challenge", bytes)
"""Random bytes a node sends in its Hello; the peer proves its key by signing them."""
register_scalar(Challenge, exact_len=CHALLENGE_LEN)

RequestId = NewType("RequestId", int)
register_scalar(RequestId, hi=2**64 - 1)

Addr = Annotated[str, MaxLen(MAX_ADDR_LEN)]
"""A dialable ``host:port`` (``[v6]:port`` for IPv6), or ``""`` for a node that does not listen."""


# ---------------------------------------------------------------------------
# Handshake


@message(100)
@dataclass(frozen=True, slots=True)
class Hello:
    """The first message each side sends: who it is, which chain it follows, a challenge."""

    protocol_version: Annotated[int, IntRange(0, 2**32 - 1)]
    chain_id: Annotated[str, MaxLen(MAX_CHAIN_ID_LEN)]
    genesis_hash: Hash32
    node_key: PublicKey
    listen_addr: Addr
    challenge: Challenge
    height: Height


@message(101)
@dataclass(frozen=True, slots=True)
class HandshakeProof:
    """What ``Auth`` signs: the peer's challenge bound to the signer's key and the chain.

    Never sent on its own; its canonical bytes are the signed payload, under
    ``consensus.crypto.DOMAIN_HANDSHAKE``.
    """

    peer_challenge: Challenge
    node_key: PublicKey
    chain_id: Annotated[str, MaxLen(MAX_CHAIN_ID_LEN)]
    genesis_hash: Hash32


@message(102)
@dataclass(frozen=True, slots=True)
class Auth:
    """The sender's signature over ``HandshakeProof(our challenge, its key, chain, genesis)``."""

    signature: Signature


@message(103)
@dataclass(frozen=True, slots=True)
class Goodbye:
    """The sender is closing the connection, and says why."""

    reason: Annotated[str, MaxLen(MAX_REASON_LEN)]


# ---------------------------------------------------------------------------
# Discovery and status


@message(104)
@dataclass(frozen=True, slots=True)
class PeersRequest:
    """Ask for addresses of other nodes."""


@message(105)
@dataclass(frozen=True, slots=True)
class Peers:
    addrs: Annotated[tuple[Addr, ...], MaxLen(MAX_PEERS_PER_MESSAGE)]


@message(106)
@dataclass(frozen=True, slots=True)
class Status:
    """The sender's committed height and the hash of its last block."""

    height: Height
    tip_hash: Hash32


# ---------------------------------------------------------------------------
# Gossip

GossipPayload = (
    SignedProposal
    | SignedVote
    | SignedTransaction
    | SignedWorkSubmission
    | SignedVerdict
    | WorkFraud
    | FalseVerdict
    | FalsePass
    | Equivocation
)


@message(107)
@dataclass(frozen=True, slots=True)
class Gossip:
    """A consensus message relayed from node to node; deduplicated by the hash of ``payload``."""

    payload: GossipPayload


# ---------------------------------------------------------------------------
# Request / response


@message(108)
@dataclass(frozen=True, slots=True)
class BlocksRequest:
    req_id: RequestId
    start_height: Height
    count: Annotated[int, IntRange(1, MAX_BLOCKS_PER_REQUEST)]


@message(109)
@dataclass(frozen=True, slots=True)
class BlockWithCommit:
    """A committed block and its certificate as canonical bytes; the node decodes and checks them."""

    block: Annotated[bytes, MaxLen(MAX_BLOCK_BYTES)]
    commit: Annotated[bytes, MaxLen(MAX_COMMIT_BYTES)]


@message(110)
@dataclass(frozen=True, slots=True)
class Blocks:
    """Consecutive blocks from the requested start height; possibly fewer than asked for."""

    req_id: RequestId
    items: Annotated[tuple[BlockWithCommit, ...], MaxLen(MAX_BLOCKS_PER_REQUEST)]


@message(111)
@dataclass(frozen=True, slots=True)
class BlobRequest:
    """Ask for ``length`` bytes of the blob ``digest`` starting at ``offset``."""

    req_id: RequestId
    digest: Hash32
    offset: int
    length: Annotated[int, IntRange(1, MAX_BLOB_CHUNK)]


@message(112)
@dataclass(frozen=True, slots=True)
class BlobChunk:
    """Bytes ``[offset, offset + len(data))`` of the blob ``digest`` of ``total_size`` bytes."""

    req_id: RequestId
    digest: Hash32
    offset: int
    total_size: int
    data: Annotated[bytes, MaxLen(MAX_BLOB_CHUNK)]


@message(113)
@dataclass(frozen=True, slots=True)
class NotFound:
    """The sender does not have what request ``req_id`` asked for."""

    req_id: RequestId


WireMessage = (
    Hello
    | Auth
    | Goodbye
    | PeersRequest
    | Peers
    | Status
    | Gossip
    | BlocksRequest
    | Blocks
    | BlobRequest
    | BlobChunk
    | NotFound
)

HandshakeMessage = Hello | Auth | Goodbye
ResponseMessage = Blocks | BlobChunk | NotFound


class Category(enum.Enum):
    """A message's size class; each has its own frame limit."""

    HANDSHAKE = "handshake"
    GOSSIP = "gossip"
    BLOB = "blob"
    BLOCKS = "blocks"
    CONTROL = "control"


LIMITS: dict[Category, int] = {
    Category.HANDSHAKE: HANDSHAKE_LIMIT,
    Category.GOSSIP: GOSSIP_LIMIT,
    Category.BLOB: BLOB_LIMIT,
    Category.BLOCKS: BLOCKS_LIMIT,
    Category.CONTROL: CONTROL_LIMIT,
}


class FrameError(DecodeError):
    """A frame that is not an acceptable wire message; the text says why."""


def get_category(msg: WireMessage) -> Category:
    if isinstance(msg, Hello | Auth | Goodbye):
        return Category.HANDSHAKE
    if isinstance(msg, Gossip):
        return Category.GOSSIP
    if isinstance(msg, BlobChunk):
        return Category.BLOB
    if isinstance(msg, Blocks):
        return Category.BLOCKS
    return Category.CONTROL


def get_limit(msg: WireMessage) -> int:
    return LIMITS[get_category(msg)]


def encode_frame(msg: WireMessage) -> bytes:
    """The frame carrying ``msg``; raises ``EncodeError`` if it is over its category's limit."""
    data = encode(msg)
    limit = get_limit(msg)
    if len(data) > limit:
        raise EncodeError(
            f"{type(msg).__name__} of {len(data)} bytes is over the {get_category(msg).value} limit of {limit}"
        )
    return data


def decode_frame(data: bytes, *, max_size: int = MAX_FRAME) -> WireMessage:
    """Decode one frame strictly; raises ``FrameError`` naming what is wrong.

    ``max_size`` lets a caller bound the work further before decoding (a
    session that has not finished its handshake accepts only handshake-sized
    frames).
    """
    bound = min(max_size, MAX_FRAME)
    if len(data) > bound:
        raise FrameError(f"frame of {len(data)} bytes is over the limit of {bound}")
    try:
        msg: WireMessage = decode(data, WireMessage, max_size=bound)
    except DecodeError as exc:
        raise FrameError(f"malformed frame: {exc}") from exc
    limit = get_limit(msg)
    if len(data) > limit:
        raise FrameError(
            f"{type(msg).__name__} frame of {len(data)} bytes is over the "
            f"{get_category(msg).value} limit of {limit}"
        )
    return msg
