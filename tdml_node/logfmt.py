"""Log lines operators can read and machines can parse: logfmt (``key=value``) or one JSON object a line.

Every line carries ``ts`` (UTC, ISO 8601, milliseconds), ``level``,
``logger`` and ``msg``, then the record's structured fields: whatever a
call site passes as ``extra={"height": 5, "job": job_id}``. Bytes print as whole
``0x`` hex, so a job id or address in a log line can be pasted into an RPC
call.

logfmt follows the usual conventions (Heroku's, Go's ``logfmt``): a value
is bare unless it is empty or holds a space, ``"``, ``=``, a backslash or a
control character; then it is double-quoted with JSON string escapes, so a
message never spills onto a second line.

This module must never configure handlers by itself on import, nor log.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Final

LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("logfmt", "json")

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_BARE = re.compile(r'[^\s"=\\\x00-\x1f\x7f]+')
_KEY_JUNK = re.compile(r"[^A-Za-z0-9_.\-]")


def fields_of(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The line's fields in order: the fixed four, the record's extras, then any traceback."""
    yield "ts", _timestamp(record.created)
    yield "level", record.levelname.lower()
    yield "logger", record.name
    yield "msg", record.getMessage()
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            yield _KEY_JUNK.sub("_", key) or "_", _plain(value)
    if record.exc_info:
        yield "exc", logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        yield "stack", record.stack_info


def format_value(value: Any) -> str:
    """One logfmt value: bare when it can be, else quoted with JSON escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return '""'
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def format_logfmt(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in fields.items())


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return format_logfmt(dict(fields_of(record)))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(dict(fields_of(record)), ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "logfmt") -> None:
    """Send every record at ``level`` and above to stderr, one line each, in ``fmt``."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (one of {', '.join(FORMATS)})")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def _timestamp(created: float) -> str:
    stamp = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _plain(value: Any) -> Any:
    """A field value as JSON and logfmt can both print it: bytes as hex, the rest as is or as text."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
