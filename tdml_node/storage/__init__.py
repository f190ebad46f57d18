"""The node's storage: the LevelDB chain store, content-addressed blobs, and blob retention.

- ``chainstore``: blocks, commits, ledger state, blobs, indexes and the
  consensus write-ahead log in one LevelDB, written in synced batches;
- ``blobs``: the blob-store interface the executor works against, and an
  in-memory store for tests and the reference run;
- ``retention``: which work blobs a node may delete as a job moves on;
- ``step_state``: the blobs of a step's new model state (a pipeline's stage
  bundles with its root).

Nothing in this package interprets blocks beyond the fields it indexes, or
decides protocol questions.
"""

from tdml_node.storage.blobs import BlobStore, MemoryBlobStore
from tdml_node.storage.chainstore import ChainStore, StorageError, Tip
from tdml_node.storage.retention import Retention
from tdml_node.storage.step_state import StepState, stage_roots, step_state

__all__ = ["BlobStore", "ChainStore", "MemoryBlobStore", "Retention", "StepState", "StorageError", "Tip", "stage_roots", "step_state"]
