"""Networking between nodes: sans-I/O codec and sessions, aiohttp transport, gossip.

- ``messages``: the wire messages (codec tags 100-139), their size limits, framing.
- ``session``: one connection's handshake and message filter, as a sans-I/O state machine.
- ``gossip``: message ids and the seen-cache that deduplicates gossip.
- ``peers``: the address book, peer scores, bans and reconnection back-off.
- ``transport``: aiohttp websockets as frame pipes (listener and dialler).
- ``network``: ``P2PNetwork``, which runs sessions over the transport for a node.

Imports from ``consensus`` only wire primitives (codec, crypto, message types);
only ``transport`` and ``network`` do I/O.
"""
