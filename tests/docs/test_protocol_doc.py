"""docs/protocol.md holds exactly what the code renders in its generated sections, and the renderer says enough.

When the first test fails, run ``python -m tdml_node.devtools.protocol_doc --write``
and read the diff: a change to a message, a model, a dataset or a preset
changed the protocol's documentation too.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Annotated

import pytest

import consensus.types
from consensus import schema
from consensus.codec import IntRange, MaxLen
from consensus.types import Hash32
from tdml_node.devtools import protocol_doc

CLASSES = schema.get_message_classes("consensus.types")


@pytest.fixture(scope="module")
def sections() -> dict[str, str]:
    return protocol_doc.render_sections()


def test_the_generated_sections_are_current(sections: dict[str, str]) -> None:
    doc = protocol_doc.DOC.read_text(encoding="utf-8")
    expected = protocol_doc.splice(doc, sections)
    if doc != expected:
        diff = "\n".join(list(difflib.unified_diff(doc.splitlines(), expected.splitlines(), "doc", "code", lineterm="", n=1))[:60])
        pytest.fail(f"docs/protocol.md is out of date; run {protocol_doc.COMMAND}\n{diff}")


def test_every_message_of_consensus_types_is_listed_with_its_version(sections: dict[str, str]) -> None:
    declared = {c for c in vars(consensus.types).values() if isinstance(c, type) and c.__module__ == "consensus.types"}
    assert set(CLASSES) == declared
    for doc, cls in zip(schema.get_message_docs(CLASSES), CLASSES, strict=True):
        assert f"#### `{cls.__name__}` — tag {doc.tag}, version {doc.version}" in sections["messages"]
        assert [f.name for f in doc.fields] == [f.name for f in dataclasses.fields(cls)]


def test_every_field_has_a_meaning_and_every_message_a_summary() -> None:
    assert schema.get_undocumented_fields(CLASSES) == ()
    assert [d.name for d in schema.get_message_docs(CLASSES) if not d.summary] == []


def test_no_note_names_a_field_that_does_not_exist() -> None:
    fields = {f"{c.__name__}.{f.name}" for c in CLASSES for f in dataclasses.fields(c)}
    assert set(schema.FIELD_NOTES) - fields == set()
    assert set(schema.SUMMARIES) - {c.__name__ for c in CLASSES} == set()


def test_every_preset_and_every_parameter_of_its_model_is_in_the_document(sections: dict[str, str]) -> None:
    from tdml_node.work.jobs import job_names

    for name in job_names():
        assert f"`{name}`" in sections["presets"]
    for name in ("net.4.bias", "conv2.weight", "blocks.1.attn.qkv.weight", "head.weight"):
        assert f"`{name}`" in sections["models"]
    assert "`opt/blocks.0.ln1.weight/step` | [] | float32" in sections["models"]


def test_types_and_bounds_read_as_the_codec_enforces_them() -> None:
    optional_items = Annotated[tuple[Hash32 | None, ...], MaxLen(3)]
    assert schema.describe_type(optional_items) == ("array of (`Hash32` (bin) or nil)", "≤ 3 items; each exactly 32 bytes")
    assert schema.describe_type(Annotated[int, IntRange(-1, 2**31 - 1)]) == ("int", "[-1, 2^31-1]")
    assert schema.describe_type(bytes) == ("bin", "≤ 2^16 bytes")
    assert schema.describe_type(str) == ("str", "≤ 256 characters")
    assert [schema.format_int(n) for n in (0, 255, 10_000, 2**20, 2**64 - 1)] == ["0", "255", "10,000", "2^20", "2^64-1"]


def test_splice_replaces_only_between_the_markers() -> None:
    begin, end = protocol_doc.begin_marker("x"), protocol_doc.end_marker("x")
    doc = f"before\n{begin}\nold\n{end}\nafter\n"
    assert protocol_doc.splice(doc, {"x": "new\n"}) == f"before\n{begin}\n\nnew\n\n{end}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        protocol_doc.splice("no markers\n", {"x": "new\n"})


def test_check_fails_on_a_stale_document_and_write_repairs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol_doc, "render_sections", lambda: {"x": "fresh\n"})
    doc = tmp_path / "protocol.md"
    doc.write_text(f"{protocol_doc.begin_marker('x')}\nstale\n{protocol_doc.end_marker('x')}\n", encoding="utf-8")
    assert protocol_doc.main(["--check", "--doc", str(doc)]) == 1
    assert protocol_doc.main(["--write", "--doc", str(doc)]) == 0
    assert protocol_doc.main(["--check", "--doc", str(doc)]) == 0
    assert "fresh" in doc.read_text(encoding="utf-8")
