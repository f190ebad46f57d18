"""The log formatter: quoting edge cases, logfmt and JSON round trips, one line per record, no reserved field names."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdml_node.logfmt import JsonFormatter, LogfmtFormatter, configure_logging, format_value
from tests.tdml_node.logfmt_parse import parse_logfmt

ROOT = Path(__file__).resolve().parents[2]
RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _record(msg: str, *args: object, extra: dict[str, Any] | None = None, exc: bool = False) -> logging.LogRecord:
    logger = logging.getLogger("tdml.test")
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("tab\there", '"tab\\there"'),
        ("bell\x07", '"bell\\u0007"'),
        ("", '""'),
        ("grüße→", "grüße→"),
        (True, "true"),
        (None, '""'),
        (42, "42"),
        (-1.5, "-1.5"),
    ],
)
def test_values_are_bare_only_when_they_can_be(value: object, text: str) -> None:
    assert format_value(value) == text


def test_a_line_has_the_fixed_fields_first_then_the_extras() -> None:
    line = LogfmtFormatter().format(_record("job %s started", "x y", extra={"height": 5, "job": b"\x01\xab", "ok": False}))
    fields = parse_logfmt(line)
    assert list(fields) == ["ts", "level", "logger", "msg", "height", "job", "ok"]
    assert fields["level"] == "warning" and fields["logger"] == "tdml.test"
    assert fields["msg"] == "job x y started"
    assert (fields["height"], fields["job"], fields["ok"]) == ("5", "0x01ab", "false")
    assert fields["ts"].endswith("Z") and len(fields["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_a_traceback_stays_on_one_line_in_both_formats() -> None:
    record = _record("failed", exc=True)
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    assert "boom\nsecond line" in parse_logfmt(line)["exc"]
    doc = json.loads(JsonFormatter().format(record))
    assert "\n" not in JsonFormatter().format(record) and "ValueError" in doc["exc"]


_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda k: k not in RESERVED)
_VALUES = st.one_of(st.text(), st.integers(), st.booleans(), st.binary(max_size=8), st.none())


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@given(msg=st.text(), extra=st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_every_line_parses_back_to_what_was_logged(msg: str, extra: dict[str, Any]) -> None:
    record = _record("%s", msg, extra=extra)
    logfmt = parse_logfmt(LogfmtFormatter().format(record))
    doc = json.loads(JsonFormatter().format(record))
    assert logfmt["msg"] == doc["msg"] == msg
    for key, value in extra.items():
        expected = "0x" + value.hex() if isinstance(value, bytes) else value
        assert doc[key] == expected
        assert logfmt[key] == _as_text(expected)
    assert list(logfmt) == list(doc)


def test_unknown_levels_and_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging("verbose")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("info", "xml")


def _extra_keys(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "extra" and isinstance(node.value, ast.Dict):
            out += [(node.lineno, k.value) for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return out


def test_no_log_call_passes_a_field_the_log_record_owns() -> None:
    # logging raises KeyError for extra={"name": ...}: a typo here would crash the caller, not just the line.
    clashes = [
        f"{path.relative_to(ROOT)}:{line} {key}"
        for package in ("tdml_node", "p2p")
        for path in (ROOT / package).rglob("*.py")
        for line, key in _extra_keys(path)
        if key in RESERVED
    ]
    seen = sum(len(_extra_keys(p)) for p in (ROOT / "tdml_node").rglob("*.py"))
    assert seen >= 10, "the scan found no log fields: it is looking in the wrong place"
    assert not clashes, clashes
