"""The block explorer's page: the static files the RPC server serves at ``GET /`` and ``GET /explorer/<file>``.

The page is plain HTML, CSS and ES modules (no build step, no CDN, so it
works offline); it reads the node only through the public JSON-RPC methods
and the ``newBlocks`` websocket subscription, like any other client.

This module must never touch the node: it only hands out the bytes of the
files it ships, by exact name, so no request path reaches the file system.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

# The page loads nothing from anywhere but its own origin; 'self' also covers
# the same-origin websocket (CSP 3), and no frame may embed it (clickjacking).
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


def _load() -> dict[str, Asset]:
    static = resources.files(__name__) / "static"
    assets = {}
    for entry in static.iterdir():
        kind = CONTENT_TYPES.get("." + entry.name.rsplit(".", 1)[-1])
        if entry.is_file() and kind is not None:
            assets[entry.name] = Asset(entry.read_bytes(), kind)
    return assets


ASSETS = _load()
"""Read once at import: the files are part of the installed package and never change under a running node."""


def get_asset(name: str) -> Asset | None:
    """The shipped file called exactly ``name`` (``index.html``, ``app.js``, …), or None."""
    return ASSETS.get(name)
