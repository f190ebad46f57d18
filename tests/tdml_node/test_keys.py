"""Key files: encrypted at rest, mode 0600, wrong passphrase and dev-key rules."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from consensus.crypto import Keypair
from tdml_node.keys import KeyFileError, read_key_file, read_public_key, write_key_file


def test_encrypted_key_round_trip(tmp_path: Path) -> None:
    kp = Keypair.generate()
    path = tmp_path / "k.json"
    write_key_file(path, kp, "correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert kp.seed.hex() not in text
    assert read_key_file(path, "correct horse").public_key == kp.public_key
    assert read_public_key(path) == kp.public_key


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, Keypair.generate(), "right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_key_file(path, "wrong")
    with pytest.raises(KeyFileError, match="passphrase"):
        read_key_file(path, None)


def test_insecure_key_only_on_dev_networks(tmp_path: Path) -> None:
    kp = Keypair.generate()
    path = tmp_path / "k.json"
    write_key_file(path, kp, None, insecure=True)
    with pytest.raises(KeyFileError, match="dev"):
        read_key_file(path, None)
    assert read_key_file(path, None, allow_insecure=True).seed == kp.seed


def test_passphrase_required_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        write_key_file(tmp_path / "k.json", Keypair.generate(), None)


def test_tampered_key_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, Keypair.generate(), None, insecure=True)
    doc = json.loads(path.read_text())
    doc["public_key"] = Keypair.generate().public_key.hex()
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="does not match"):
        read_key_file(path, None, allow_insecure=True)
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="cannot read"):
        read_key_file(path, None, allow_insecure=True)
