"""The RPC cookie: a random bearer token written at start to a file only the node's user can read.

As Bitcoin Core's ``.cookie``: whoever can read ``<data_dir>/rpc.cookie``
(mode 0600) is trusted to upload blobs; a web page cannot read it. The file
is replaced at every start, so an old token stops working. This module must
never log or print a token.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_cookie(path: Path) -> str:
    """A fresh token, written to ``path`` (created 0600, then moved over any old cookie)."""
    token = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(tmp, path)
    return token
