"""What the node's parts share: the narrow views they see each other through, and the services below them.

- ``views``: the committed chain head (``ChainHead``), the read-only chain
  view and the node view the RPC server gets, committed-block notices;
- ``seams``: the function-valued seams of a node's own behaviour (train,
  check, judge a proposal, publish, serve a blob), honest by default;
- ``workqueue``: the one thread torch work runs on, by priority;
- ``runner``: running work on that queue, fetching a missing blob and retrying;
- ``netlink``: the face of the peer-to-peer network the node uses, and blob fetching;
- ``faults``: the one table from a peer's fault kind to its penalty;
- ``tasks``: the set of background tasks a node owns;
- ``wakeup``: a level-triggered notice that something a waiter cares about changed.

This package must never import the node, the duties, the RPC server or the
CLI: they all stand on it.
"""
