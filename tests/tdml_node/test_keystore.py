"""Named account keys: `tdml-node keys new|list|show|address`, encrypted like node keys, found by name."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from consensus.crypto import address_of
from tdml_node.cli import main
from tdml_node.keys import read_key_file
from tdml_node.keystore import KeystoreError, default_keys_dir, list_keys, resolve_key


def _run(args: list[str], code: int = 0, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False, env=env)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def test_keys_new_list_show_address(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    secret = tmp_path / "pass"
    secret.write_text("sesame\n")
    made = _run(["keys", "new", "alice", "--keys-dir", str(keys), "--passphrase-file", str(secret)])
    path = keys / "alice.json"
    assert f"wrote {path}" in made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(keys.stat().st_mode) == 0o700
    keypair = read_key_file(path, "sesame")
    assert keypair.seed.hex() not in path.read_text() and not json.loads(path.read_text())["insecure"]
    address = "0x" + keypair.address.hex()
    assert _run(["keys", "address", "alice", "--keys-dir", str(keys)]).strip() == address
    assert _run(["keys", "address", "alice", "--keys-dir", str(keys), "--public-key"]).strip() == (
        "0x" + keypair.public_key.hex()
    )
    _run(["keys", "new", "bob", "--keys-dir", str(keys), "--insecure-dev-key"])
    listed = _run(["keys", "list", "--keys-dir", str(keys)]).splitlines()
    assert [line.split()[0] for line in listed] == ["alice", "bob"] and listed[0].split()[1] == address
    shown = _run(["keys", "show", "bob", "--keys-dir", str(keys)])
    assert "encrypted:  no (dev key)" in shown
    assert "encrypted:  yes" in _run(["keys", "show", "alice"], env={"TDML_KEYS_DIR": str(keys)})


def test_keys_are_never_overwritten_and_bad_names_are_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _run(["keys", "new", "alice", "--keys-dir", str(keys), "--insecure-dev-key"])
    before = (keys / "alice.json").read_text()
    out = _run(["keys", "new", "alice", "--keys-dir", str(keys), "--insecure-dev-key"], code=1)
    assert out.strip().startswith("Error: a key named 'alice' exists") and len(out.strip().splitlines()) == 1
    assert (keys / "alice.json").read_text() == before
    assert "bad key name" in _run(["keys", "new", "../evil", "--keys-dir", str(keys), "--insecure-dev-key"], code=1)
    assert "no key named 'carol'" in _run(["keys", "show", "carol", "--keys-dir", str(keys)], code=1)
    assert "no key named 'carol'" in _run(["keys", "address", "carol", "--keys-dir", str(keys)], code=1)
    assert not (tmp_path / "evil.json").exists()


def test_a_key_is_named_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    _run(["keys", "new", "alice", "--keys-dir", str(keys), "--insecure-dev-key"])
    assert resolve_key(keys, "alice") == keys / "alice.json"
    assert resolve_key(keys, str(keys / "alice.json")) == keys / "alice.json"
    with pytest.raises(KeystoreError, match="no key named 'bob'"):
        resolve_key(keys, "bob")
    with pytest.raises(KeystoreError, match="no key file"):
        resolve_key(keys, str(tmp_path / "missing.json"))
    (stored,) = list_keys(keys)
    assert stored.address == address_of(stored.public_key)
    monkeypatch.delenv("TDML_KEYS_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_keys_dir() == tmp_path / "cfg" / "tdml" / "keys"
    monkeypatch.setenv("TDML_KEYS_DIR", str(keys))
    assert default_keys_dir() == keys
