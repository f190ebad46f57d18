"""A strict logfmt reader for the tests, written apart from the formatter so that it checks it, not echoes it.

A line is ``key=value`` pairs split by one space; a key is ``[A-Za-z0-9_.-]+``;
a value is bare (no space, ``"``, ``=``, backslash or control character) or a
JSON string. Anything else raises ``ValueError``.
"""

from __future__ import annotations

import json
import re

_PAIR = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\\x00-\x1f]|\\.)*"|[^\s"=\\\x00-\x1f\x7f]*)')


def parse_logfmt(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while True:
        match = _PAIR.match(line, pos)
        if match is None:
            raise ValueError(f"not logfmt at column {pos}: {line!r}")
        key, raw = match.groups()
        if key in out:
            raise ValueError(f"key {key!r} twice: {line!r}")
        out[key] = json.loads(raw) if raw.startswith('"') else raw
        pos = match.end()
        if pos == len(line):
            return out
        if line[pos] != " ":
            raise ValueError(f"no space after {key}= at column {pos}: {line!r}")
        pos += 1
