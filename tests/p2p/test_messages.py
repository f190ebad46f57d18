"""Wire messages: tags, round trips, and the strict per-category frame limits."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from p2p_fixtures import GENESIS, PROFILE, keypair, signed_transfer, signed_vote

from consensus import codec
from consensus.codec import EncodeError, encode
from consensus.types import (
    Block,
    BlockBody,
    BlockHeader,
    Hash32,
    Height,
    Proposal,
    PublicKey,
    Round,
    Signature,
    SignedProposal,
    SignedWorkSubmission,
    WorkSubmission,
)
from p2p import messages
from p2p.messages import (
    BLOB_LIMIT,
    BLOCKS_LIMIT,
    CONTROL_LIMIT,
    GOSSIP_LIMIT,
    HANDSHAKE_LIMIT,
    MAX_BLOB_CHUNK,
    MAX_FRAME,
    Auth,
    BlobChunk,
    BlobRequest,
    Blocks,
    BlocksRequest,
    BlockWithCommit,
    Category,
    Challenge,
    FrameError,
    Goodbye,
    Gossip,
    HandshakeProof,
    Hello,
    NotFound,
    Peers,
    PeersRequest,
    RequestId,
    Status,
    WireMessage,
    decode_frame,
    encode_frame,
    get_category,
)

DIGEST = Hash32(hashlib.sha256(b"blob").digest())

SAMPLES: list[WireMessage] = [
    Hello(1, "chain", GENESIS, keypair(1).public_key, "127.0.0.1:26656", Challenge(bytes(range(32))), Height(7)),
    Auth(Signature(bytes(64))),
    Goodbye("chain id mismatch"),
    PeersRequest(),
    Peers(("127.0.0.1:1", "[::1]:2", "node.example:3")),
    Status(Height(12), DIGEST),
    Gossip(signed_vote(1)),
    Gossip(signed_transfer(2)),
    BlocksRequest(RequestId(1), Height(5), 10),
    Blocks(RequestId(1), (BlockWithCommit(b"block", b"commit"), BlockWithCommit(b"", b""))),
    BlobRequest(RequestId(2), DIGEST, 0, 512 * 1024),
    BlobChunk(RequestId(2), DIGEST, 0, 3, b"abc"),
    NotFound(RequestId(3)),
]


def test_tags_are_in_the_p2p_range_and_do_not_clash() -> None:
    ours = {tag: cls for tag, cls in codec.registered_messages().items() if cls.__module__ == "p2p.messages"}
    assert set(ours) <= set(range(100, 140))
    names = {cls.__name__ for cls in ours.values()}
    assert names >= {"Hello", "Auth", "HandshakeProof", "Goodbye", "Gossip", "Blocks", "BlobChunk", "NotFound"}
    others = {tag for tag, cls in codec.registered_messages().items() if cls.__module__ != "p2p.messages"}
    assert not others & set(range(100, 140))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: WireMessage) -> None:
    frame = encode_frame(msg)
    decoded = decode_frame(frame)
    assert decoded == msg
    assert type(decoded) is type(msg)
    assert encode_frame(decoded) == frame


def test_gossip_keeps_the_payload_type() -> None:
    vote, tx = signed_vote(3), signed_transfer(3)
    assert type(decode_frame(encode_frame(Gossip(vote)))).__name__ == "Gossip"
    assert decode_frame(encode_frame(Gossip(vote))) == Gossip(vote)
    assert decode_frame(encode_frame(Gossip(tx))) == Gossip(tx)


def test_categories() -> None:
    cats = {type(m).__name__: get_category(m) for m in SAMPLES}
    assert cats["Hello"] is cats["Auth"] is cats["Goodbye"] is Category.HANDSHAKE
    assert cats["Gossip"] is Category.GOSSIP
    assert cats["BlobChunk"] is Category.BLOB
    assert cats["Blocks"] is Category.BLOCKS
    for name in ("PeersRequest", "Peers", "Status", "BlocksRequest", "BlobRequest", "NotFound"):
        assert cats[name] is Category.CONTROL
    assert (HANDSHAKE_LIMIT, CONTROL_LIMIT, GOSSIP_LIMIT, BLOCKS_LIMIT) == (4096, 65536, 8 << 20, 16 << 20)
    assert MAX_BLOB_CHUNK < BLOB_LIMIT < MAX_BLOB_CHUNK + 8192
    assert MAX_FRAME == BLOCKS_LIMIT


def test_messages_that_are_not_on_the_wire_are_refused() -> None:
    proof = HandshakeProof(Challenge(bytes(32)), keypair(1).public_key, "chain", GENESIS)
    with pytest.raises(FrameError, match="unknown tag"):
        decode_frame(encode(proof))
    with pytest.raises(FrameError, match="unknown tag"):
        decode_frame(encode(signed_vote(1)))  # a bare consensus message, not wrapped in Gossip


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_truncated_and_trailing_bytes_are_refused(msg: WireMessage) -> None:
    frame = encode_frame(msg)
    for cut in range(len(frame)):
        with pytest.raises(FrameError):
            decode_frame(frame[:cut])
    with pytest.raises(FrameError):
        decode_frame(frame + b"\x00")


def test_junk_is_refused_with_a_clear_error() -> None:
    with pytest.raises(FrameError, match="malformed frame"):
        decode_frame(b"\xc1")
    with pytest.raises(FrameError, match="malformed frame"):
        decode_frame(msgpack.packb({"tag": 100}))
    with pytest.raises(FrameError, match="malformed frame"):
        decode_frame(msgpack.packb([106, 1, 5]))  # Status with a missing field


def test_the_largest_limit_is_checked_before_decoding() -> None:
    with pytest.raises(FrameError, match=f"over the limit of {MAX_FRAME}"):
        decode_frame(bytes(MAX_FRAME + 1))
    with pytest.raises(FrameError, match="over the limit of 4096"):
        decode_frame(encode_frame(Peers(("a:1",) * 64)) + bytes(5000), max_size=HANDSHAKE_LIMIT)


def test_control_messages_over_64_kib_are_refused() -> None:
    # 64 addresses of 256 four-byte characters: within every field bound, over the category limit.
    big = Peers(("\U0001f600" * 256,) * 64)
    with pytest.raises(EncodeError, match="control limit"):
        encode_frame(big)
    data = encode(big)
    assert CONTROL_LIMIT < len(data) < MAX_FRAME
    with pytest.raises(FrameError, match="control limit of 65536"):
        decode_frame(data)


def test_peers_is_bounded_in_count() -> None:
    with pytest.raises(EncodeError, match="over the limit"):
        encode_frame(Peers(("a:1",) * 65))


def _oversized_proposal() -> SignedProposal:
    """A proposal just over the gossip limit: many submissions with full checkpoint chains."""
    sub = WorkSubmission(
        DIGEST, 0, 0, keypair(1).public_key, DIGEST, (DIGEST,) * 256, DIGEST, tuple(range(256)), PROFILE
    )
    signed = SignedWorkSubmission(sub, Signature(bytes(64)))
    count = GOSSIP_LIMIT // len(encode(signed)) + 1
    body = BlockBody((), (signed,) * count, (), (), (), None)
    header = BlockHeader("c", Height(1), Round(0), DIGEST, PublicKey(bytes(32)), DIGEST, DIGEST, 1)
    proposal = Proposal(Height(1), Round(0), Block(header, body), -1, PublicKey(bytes(32)))
    return SignedProposal(proposal, Signature(bytes(64)))


def test_gossip_over_8_mib_is_refused() -> None:
    gossip = Gossip(_oversized_proposal())
    with pytest.raises(EncodeError, match="gossip limit"):
        encode_frame(gossip)
    data = encode(gossip)
    assert GOSSIP_LIMIT < len(data) <= MAX_FRAME
    with pytest.raises(FrameError, match="gossip limit"):
        decode_frame(data)


def test_blob_chunks_up_to_1_mib_pass_and_larger_data_is_refused() -> None:
    chunk = BlobChunk(RequestId(1), DIGEST, 0, MAX_BLOB_CHUNK, bytes(MAX_BLOB_CHUNK))
    assert decode_frame(encode_frame(chunk)) == chunk
    with pytest.raises(EncodeError, match="over the limit"):
        encode(BlobChunk(RequestId(1), DIGEST, 0, MAX_BLOB_CHUNK + 1, bytes(MAX_BLOB_CHUNK + 1)))
    with pytest.raises(EncodeError, match="out of range"):
        encode(BlobRequest(RequestId(1), DIGEST, 0, MAX_BLOB_CHUNK + 1))


def test_block_ranges_up_to_16_mib_pass_and_more_is_refused() -> None:
    item = BlockWithCommit(bytes(7 * 1024 * 1024), bytes(1000))
    two = Blocks(RequestId(1), (item, item))
    assert decode_frame(encode_frame(two)) == two
    three = Blocks(RequestId(1), (item, item, item))
    with pytest.raises(EncodeError, match="blocks limit"):
        encode_frame(three)
    with pytest.raises(FrameError, match="over the limit"):
        decode_frame(encode(three))


def test_field_bounds() -> None:
    with pytest.raises(EncodeError, match=r"Hello\.challenge"):
        encode(Hello(1, "c", GENESIS, keypair(1).public_key, "", Challenge(bytes(31)), Height(0)))
    with pytest.raises(EncodeError, match=r"BlocksRequest\.count"):
        encode(BlocksRequest(RequestId(1), Height(0), messages.MAX_BLOCKS_PER_REQUEST + 1))
    with pytest.raises(EncodeError, match=r"BlocksRequest\.count"):
        encode(BlocksRequest(RequestId(1), Height(0), 0))
    with pytest.raises(EncodeError, match=r"Goodbye\.reason"):
        encode(Goodbye("x" * 257))
