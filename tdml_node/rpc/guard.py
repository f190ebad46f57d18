"""Who may talk to the RPC server: the Host (vhost) and Origin checks, content types, the blob token.

A web page the operator visits can make the browser send requests to a
node on loopback (cross-site requests, DNS rebinding). These rules stop it,
as geth's ``--http.vhosts`` and ``--http.corsdomain`` do:

- a ``Host`` whose name is not an allowed virtual host is refused (403);
  a missing ``Host`` is fine (no browser omits it);
- a request with an ``Origin`` that is not allowed is refused (403);
  requests without one (curl, the CLI, scripts) are fine;
- JSON-RPC posts must be ``application/json`` and blob uploads
  ``application/octet-stream`` (415 otherwise), so no HTML form or
  "simple" cross-site request can carry them;
- ``POST /blob`` needs ``Authorization: Bearer <token>`` (401 otherwise).

The checks here are pure functions of header values; ``guard_middleware``
applies the Host and Origin rules to every request, websocket upgrades too.
This module must never read a request body or touch the node.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY = "*"


@dataclass(frozen=True)
class RpcPolicy:
    """The access rules and the body bounds of one RPC server."""

    vhosts: tuple[str, ...] = LOOPBACK_NAMES
    """Host names (no port) requests may be addressed to; ``*`` allows any."""
    cors_origins: tuple[str, ...] = LOOPBACK_NAMES
    """Host names (any scheme, any port) of the web origins allowed to call; ``*`` allows any."""
    tokens: tuple[str, ...] = ()
    """Bearer tokens that may upload blobs (the cookie's, an operator's fixed one); none: no uploads."""
    max_blob_bytes: int = 256 * 1024 * 1024
    """The largest blob upload; bigger bodies are refused (413) as soon as they pass it."""
    body_timeout_s: float = 30.0
    """A JSON-RPC body not received whole within this is cut (slowloris bodies)."""
    blob_timeout_s: float = 300.0
    """The same for a blob upload."""


def host_name(value: str) -> str:
    """The name in a ``Host`` header or an origin's netloc, without port or IPv6 brackets, lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") > 1:
        return value
    return value.split(":", 1)[0]


def name_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    if ANY in allowed:
        return True
    return name != "" and name in {host_name(a) for a in allowed}


def host_allowed(host: str | None, vhosts: tuple[str, ...]) -> bool:
    return host is None or name_allowed(host_name(host), vhosts)


def origin_allowed(origin: str | None, origins: tuple[str, ...]) -> bool:
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        netloc = parts.netloc
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not netloc or "@" in netloc:
        return False
    return name_allowed(host_name(netloc), origins)


def media_type(content_type: str | None) -> str | None:
    """The media type of a ``Content-Type`` header without its parameters, lower-cased."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def bearer_ok(authorization: str | None, tokens: tuple[str, ...]) -> bool:
    if authorization is None:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return False
    # aiohttp decodes header bytes that are not UTF-8 as surrogates: encode them back, never fail on them.
    given = value.strip().encode("utf-8", "surrogateescape")
    # compare_digest against every token so the time taken says nothing about a near miss.
    return any([hmac.compare_digest(given, t.encode()) for t in tokens if t])


def own_host(host: str) -> tuple[str, ...]:
    """The server's own listen address, when it is a concrete IP, is a name it may be reached by."""
    try:
        address = ipaddress.ip_address(host_name(host))
    except ValueError:
        return ()
    return () if address.is_unspecified else (str(address),)


def guard_middleware(policy: RpcPolicy, listen_host: str) -> Middleware:
    vhosts = policy.vhosts + own_host(listen_host)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get(hdrs.HOST), vhosts):
            return web.Response(status=403, text="host not allowed (rpc_vhosts)")
        origin = request.headers.get(hdrs.ORIGIN)
        if not origin_allowed(origin, policy.cors_origins):
            return web.Response(status=403, text="origin not allowed (rpc_cors_origins)")
        if request.method == hdrs.METH_OPTIONS and origin is not None:
            response: web.StreamResponse = web.Response(status=204)
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "GET, POST"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = "Content-Type, Authorization"
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
        else:
            response = await handler(request)
        if origin is not None and not response.prepared:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.VARY] = hdrs.ORIGIN
        return response

    return guard
