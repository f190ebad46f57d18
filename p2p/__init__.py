"""Networking between nodes: sans-I/O codec and sessions, aiohttp transport, gossip.

Sans-I/O (no asyncio, clock, randomness or logging):

- ``messages``: the wire messages (codec tags 100-139), their size limits, framing.
- ``session``: one connection's handshake and message filter, as a sans-I/O state machine.
- ``gossip``: message ids and the seen-cache that deduplicates gossip.
- ``peers``: the address book, peer scores, bans and reconnection back-off.
- ``settings``: ``ChainIdentity``, ``PeerSettings`` and ``NetworkConfig``, what a network is built from.
- ``handler``: ``NetworkHandler``, what the network needs of the node.

Runtime:

- ``transport``: aiohttp websockets as frame pipes (listener and dialler); the only aiohttp user.
- ``tasks``: the task set a network owns.
- ``link``: one live connection: its session, bounded send queue and writer.
- ``requests``: the requests we make (blobs, block ranges) and the responses we wait for.
- ``serving``: answering the requests peers make of us.
- ``network``: ``P2PNetwork``, the facade that runs links over the transport for a node.

Imports from ``consensus`` only wire primitives (codec, crypto, message types).
"""
