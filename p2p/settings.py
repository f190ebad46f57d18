"""What a ``P2PNetwork`` is configured with: the chain it serves, where it listens and whom it dials, and its timings.

Three frozen values, each for a different reader:

- ``ChainIdentity``: what both sides of a handshake compare (a peer of
  another chain, genesis or protocol version is refused);
- ``PeerSettings``: this node's place in the network (bind address,
  bootstrap peers, how many peers, the address to advertise), which an
  operator sets per node;
- ``NetworkConfig``: timings and limits, the same for every node of a
  deployment; tests shorten them.

This module must never do I/O, read a clock or hold mutable state: it only
describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.types import Hash32
from p2p.gossip import DEFAULT_SEEN_CAPACITY, DEFAULT_SEEN_TTL
from p2p.peers import (
    DEFAULT_BACKOFF_MAX,
    DEFAULT_BACKOFF_MIN,
    DEFAULT_BAN_DURATION,
    DEFAULT_BAN_THRESHOLD,
    format_addr,
    is_dialable,
)
from p2p.session import RateLimit

MAX_BLOB_SIZE = 1 << 30
"""The largest blob a node agrees to download by default (1 GiB)."""


@dataclass(frozen=True, slots=True)
class ChainIdentity:
    """The chain a node follows; a peer must match all three to be accepted."""

    chain_id: str  # the chain's name, also bound into every signature
    genesis_hash: Hash32  # the hash of the genesis document
    protocol_version: int  # the wire protocol version both sides must speak


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """Where this node listens, whom it dials first, and how many peers it keeps."""

    host: str = "127.0.0.1"  # the address to bind; 0.0.0.0 or :: for every interface
    port: int = 0  # the port to bind; 0 lets the system choose (see ``P2PNetwork.port``)
    bootstrap: tuple[str, ...] = ()  # host:port addresses dialled at start and redialled with back-off
    max_peers: int = 32  # established connections kept, inbound and outbound together
    advertise_addr: str | None = None  # the host:port peers should dial us at; None: told from host and port

    def __post_init__(self) -> None:
        # A list from a config file is taken as the tuple it stands for.
        object.__setattr__(self, "bootstrap", tuple(self.bootstrap))

    def get_advertise_addr(self, bound_port: int) -> str:
        """The address peers are told to dial: ``advertise_addr``, else the bind address when dialable, else ""."""
        if self.advertise_addr is not None:
            return self.advertise_addr
        addr = format_addr(self.host, bound_port)  # not when bound to every interface (0.0.0.0 or ::)
        return addr if is_dialable(addr) else ""


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Timings and limits of the network; the defaults suit a real deployment."""

    dial_interval: float = 1.0  # how often the dial loop looks for peers to connect to
    pex_interval: float = 10.0  # how often each peer is asked for addresses
    status_interval: float = 5.0  # how often our Status goes to every peer
    handshake_timeout: float = 10.0  # a connection not established by then is dropped
    request_timeout: float = 10.0  # the longest wait for one response from one peer
    connect_timeout: float = 5.0  # the longest wait for a websocket to open
    close_timeout: float = 2.0  # the longest wait for a Goodbye to go out and a close to finish
    heartbeat: float = 15.0  # websocket ping interval; a peer that stops answering is dropped
    stable_after: float = 10.0  # an outbound connection that lasted this long counts as a success
    max_pending_handshakes: int = 64  # inbound connections still in their handshake (an exact cap)
    max_pending_handshakes_per_ip: int = 8  # of those, from one IP we do not know
    reserved_pending_handshakes: int = 16  # of max_pending_handshakes, kept for known IPs
    max_inbound_connections: int = 256  # inbound sockets open at once, upgraded or not
    max_inbound_per_ip: int = 16  # of those, from one IP we do not know
    reserved_inbound_connections: int = 32  # of max_inbound_connections, kept for known IPs
    header_timeout: float = 10.0  # a new socket must have sent its upgrade request by then
    idle_timeout: float = 60.0  # nothing in and nothing drained for this long closes a socket (above heartbeat)
    write_timeout: float = 20.0  # unsent bytes waiting this long without draining close a socket
    preestablish_bytes: int = 64 * 1024  # bytes read from a socket before its handshake completes
    send_queue_frames: int = 1024  # frames queued for one peer before it counts as too slow
    send_queue_bytes: int = 64 * 1024 * 1024  # bytes queued for one peer before it is too slow
    max_blob_size: int = MAX_BLOB_SIZE  # the largest blob we agree to download
    rate_limit: RateLimit = field(default_factory=RateLimit)  # per-peer received traffic
    seen_capacity: int = DEFAULT_SEEN_CAPACITY  # gossip ids remembered for dedup
    seen_ttl: float = DEFAULT_SEEN_TTL  # seconds a gossip id is remembered
    ban_threshold: float = DEFAULT_BAN_THRESHOLD  # score at which a peer is banned
    ban_duration: float = DEFAULT_BAN_DURATION  # seconds a ban lasts
    backoff_min: float = DEFAULT_BACKOFF_MIN  # first redial delay after a failure
    backoff_max: float = DEFAULT_BACKOFF_MAX  # longest redial delay

