"""The keystore: named account keys (clients, funders) in one directory, one key file each.

A key named ``alice`` lives in ``KEYS_DIR/alice.json``, written by
``tdml_node.keys`` exactly like a node key (Argon2id + SecretBox, mode 0600),
so everything that reads a node key reads these. The directory is
``--keys-dir``, else ``$TDML_KEYS_DIR``, else ``$XDG_CONFIG_HOME/tdml/keys``
(``~/.config/tdml/keys``), created mode 0700.

This module must never print or log a seed or a passphrase, and never
overwrite a key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from consensus.crypto import Keypair, address_of
from tdml_node.keys import KeyFileError, read_public_key, write_key_file

KEYS_DIR_ENV = "TDML_KEYS_DIR"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class KeystoreError(KeyFileError):
    """A key name is malformed, unknown or already taken."""


@dataclass(frozen=True)
class StoredKey:
    name: str
    path: Path
    public_key: bytes

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)


def default_keys_dir() -> Path:
    env = os.environ.get(KEYS_DIR_ENV)
    if env:
        return Path(env)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "tdml" / "keys"


def key_path(keys_dir: Path, name: str) -> Path:
    if not _NAME.fullmatch(name) or name.endswith(".json"):
        raise KeystoreError(f"bad key name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    return keys_dir / f"{name}.json"


def create_key(keys_dir: Path, name: str, passphrase: str | None, *, insecure: bool = False) -> StoredKey:
    path = key_path(keys_dir, name)
    if path.exists():
        raise KeystoreError(f"a key named {name!r} exists ({path}); keys are never overwritten")
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keypair = Keypair.generate()
    write_key_file(path, keypair, passphrase, insecure=insecure)
    return StoredKey(name, path, keypair.public_key)


def get_key(keys_dir: Path, name: str) -> StoredKey:
    path = key_path(keys_dir, name)
    if not path.exists():
        raise KeystoreError(f"no key named {name!r} in {keys_dir} (`tdml-node keys list` shows them)")
    return StoredKey(name, path, read_public_key(path))


def list_keys(keys_dir: Path) -> list[StoredKey]:
    if not keys_dir.is_dir():
        return []
    return [get_key(keys_dir, p.stem) for p in sorted(keys_dir.glob("*.json")) if _NAME.fullmatch(p.stem)]


def resolve_key(keys_dir: Path, name_or_file: str) -> Path:
    """The key file a ``--key`` value means: an existing file, else a name in the keystore."""
    as_file = Path(name_or_file).expanduser()
    if as_file.is_file():
        return as_file
    if not _NAME.fullmatch(name_or_file) or name_or_file.endswith(".json"):
        raise KeystoreError(f"no key file {name_or_file} (and it is not a key name)")
    try:
        return get_key(keys_dir, name_or_file).path
    except KeystoreError as exc:
        raise KeystoreError(f"{exc}, and no file {name_or_file} either") from exc
