"""``tdml-node devnet``'s run as a person watches it: the session, its live status, its view and its report.

This package must never reach into a node's memory: it reads the nodes only
through their RPC and ``/metrics``, as a user would.
"""
