"""Node key files: Ed25519 seeds encrypted at rest with a passphrase.

A key file is JSON, mode 0600. The secure form derives a key from the
passphrase with Argon2id (pynacl ``pwhash``) and seals the 32-byte seed with
``SecretBox``; the file also names the public key so tools can show the node
id without the passphrase. The insecure form (``"insecure": true``) holds the
seed in the clear and exists for throwaway devnets only: the node refuses it
unless told this is a dev network.

This module must never log or print a seed or a passphrase.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.exceptions import CryptoError

from consensus.crypto import Keypair

KDF = nacl.pwhash.argon2id
OPSLIMIT = KDF.OPSLIMIT_INTERACTIVE
MEMLIMIT = KDF.MEMLIMIT_INTERACTIVE


class KeyFileError(Exception):
    """A key file is missing, malformed, or the passphrase is wrong."""


def write_key_file(path: Path, keypair: Keypair, passphrase: str | None, *, insecure: bool = False) -> None:
    if passphrase is None and not insecure:
        raise KeyFileError("a passphrase is required (or the explicit insecure dev-key option)")
    doc: dict[str, object] = {"version": 1, "public_key": keypair.public_key.hex()}
    if insecure:
        doc.update(insecure=True, seed=keypair.seed.hex())
    else:
        assert passphrase is not None
        salt = nacl.utils.random(KDF.SALTBYTES)
        key = KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=OPSLIMIT, memlimit=MEMLIMIT)
        sealed = nacl.secret.SecretBox(key).encrypt(keypair.seed)
        doc.update(
            insecure=False,
            kdf="argon2id",
            opslimit=OPSLIMIT,
            memlimit=MEMLIMIT,
            salt=salt.hex(),
            sealed_seed=bytes(sealed).hex(),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_key_file(path: Path, passphrase: str | None, *, allow_insecure: bool = False) -> Keypair:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeyFileError(f"no key file at {path} (run `tdml-node init`)") from exc
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}") from exc
    try:
        if doc.get("insecure"):
            if not allow_insecure:
                raise KeyFileError(
                    f"{path} holds an unencrypted dev key; it is accepted only on a dev network (--dev)"
                )
            keypair = Keypair.from_seed(bytes.fromhex(doc["seed"]))
        else:
            if passphrase is None:
                raise KeyFileError(f"{path} is encrypted: give the passphrase (--passphrase-file or TDML_PASSPHRASE)")
            key = KDF.kdf(
                nacl.secret.SecretBox.KEY_SIZE,
                passphrase.encode(),
                bytes.fromhex(doc["salt"]),
                opslimit=int(doc["opslimit"]),
                memlimit=int(doc["memlimit"]),
            )
            keypair = Keypair.from_seed(nacl.secret.SecretBox(key).decrypt(bytes.fromhex(doc["sealed_seed"])))
    except CryptoError as exc:
        raise KeyFileError(f"wrong passphrase for {path}") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyFileError(f"malformed key file {path}: {exc}") from exc
    if keypair.public_key.hex() != doc.get("public_key"):
        raise KeyFileError(f"{path}: the key does not match its recorded public key")
    return keypair


def read_public_key(path: Path) -> bytes:
    try:
        return bytes.fromhex(json.loads(path.read_text())["public_key"])
    except (OSError, ValueError, KeyError) as exc:
        raise KeyFileError(f"cannot read the public key from {path}: {exc}") from exc
