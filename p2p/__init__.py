"""Networking between nodes: sans-I/O codec and sessions, aiohttp transport, gossip.

Imports from ``consensus`` only wire primitives (codec, crypto, message types).
"""
