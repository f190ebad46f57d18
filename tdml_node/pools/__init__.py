"""What a node holds between blocks: pending transactions (``mempool``) and work (``workpool``).

The pools collect and select deterministically; every rule about what is
valid comes from ``consensus``. Nothing here performs I/O or runs torch.
"""

from tdml_node.pools.mempool import (
    Mempool,
    TxRejected,
    check_transaction,
    select_transactions,
    tx_hash,
)
from tdml_node.pools.workpool import Evidence, UnitEntry, WorkPool, open_unit_keys

__all__ = [
    "Evidence",
    "Mempool",
    "TxRejected",
    "UnitEntry",
    "WorkPool",
    "check_transaction",
    "open_unit_keys",
    "select_transactions",
    "tx_hash",
]
