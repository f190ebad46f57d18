"""The node: one consensus loop and the parts it drives, built by ``open_node``.

- ``node``: the loop (inbox, write-ahead log, core, actions, commit);
- ``factory``: ``open_node``, which builds the parts and closes what it opened;
- ``proposer``: the block this node proposes, and when;
- ``validator``: checking a proposal before prevoting it;
- ``intake``: taking in transactions;
- ``handlers``: what the p2p network calls on the node;
- ``sync``: fetching certified blocks when peers are ahead;
- ``wal``: the consensus write-ahead log;
- ``privval``: the double-sign guard;
- ``proposal_hold``: holding a propose timeout while a proposal is checked.
"""

from tdml_node.node.factory import open_node
from tdml_node.node.node import Node, NodeHalted
from tdml_node.runtime.views import CommittedBlock

__all__ = ["CommittedBlock", "Node", "NodeHalted", "open_node"]
