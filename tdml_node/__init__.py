"""The node: configuration, CLI, storage, service loop, RPC, devnet, and the torch executor."""

__version__ = "0.1.0"
