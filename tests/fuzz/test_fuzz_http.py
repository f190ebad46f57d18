"""CI share of the socket-level fuzzing: raw HTTP requests and websocket frames against a listening server.

No request gets a 5xx or puts a traceback in the log, websocket frames get
answers or a standard close, and the node stays healthy with no listener
left behind (see ``target_http`` and ``target_ws``).
"""

from __future__ import annotations

import os

from . import target_http
from .run import run_socket_async

SEED = int(os.environ.get("TDML_FUZZ_SEED", "20240611"))
HTTP_INPUTS = int(os.environ.get("TDML_FUZZ_CI_HTTP_INPUTS", "60"))
WS_INPUTS = int(os.environ.get("TDML_FUZZ_CI_WS_INPUTS", "150"))


async def test_raw_http_requests_find_no_failure() -> None:
    result = await run_socket_async("http", SEED, 0, HTTP_INPUTS)
    assert result.failure_count == 0, "\n\n".join(f.describe() for f in result.failures)
    assert result.inputs == HTTP_INPUTS
    statuses = {outcome.rsplit(" -> ", 1)[1] for outcome in result.outcomes}
    # The server's refusals were all met: malformed, unauthorized, cross-site, wrong type, too slow.
    assert {"200", "400", "401", "403", "415"} <= statuses, statuses


async def test_websocket_frames_find_no_failure() -> None:
    result = await run_socket_async("ws", SEED, 0, WS_INPUTS)
    assert result.failure_count == 0, "\n\n".join(f.describe() for f in result.failures)
    assert result.inputs == WS_INPUTS
    ends = {outcome.rsplit(" -> ", 1)[1] for outcome in result.outcomes}
    assert {"probe", "closed:1002", "closed:1007"} <= ends, ends


async def test_a_token_that_is_not_utf8_is_refused_not_a_crash() -> None:
    """Found by fuzzing: a non-UTF-8 byte in Authorization made ``POST /blob`` answer 500 with a traceback."""
    async with target_http.live_server() as h:
        head = b"POST /blob HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
        request = head + b"Authorization: Bearer \x96" + target_http.TOKEN.encode() + b"\r\nContent-Length: 5\r\n\r\nhello"
        outcome = await target_http.check(h, target_http.HttpInput(request, "non-utf8-token"))
        assert outcome == "non-utf8-token -> 401"
