"""Options and helpers the ``tdml-node`` commands share: the home, the RPC URL, passphrases, keys.

Each shared option is declared once here and applied as a decorator, so
every command spells, documents and defaults it the same way.

This module must never hold node logic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from consensus.crypto import Keypair
from tdml_node.keys import KeyFileError, read_key_file

F = TypeVar("F", bound=Callable[..., Any])

HOME_HELP = "The node's home directory (config.toml, genesis.bin, node_key.json, data/)."
PASS_HELP = "File holding the key passphrase (else $TDML_PASSPHRASE, else a prompt)."
DEFAULT_URL = "http://127.0.0.1:8645"


def url_option(fn: F) -> F:
    """``--url``: the node's RPC URL (also ``$TDML_RPC``)."""
    return click.option("--url", default=DEFAULT_URL, show_default=True, envvar="TDML_RPC", help="Node RPC URL.")(fn)


def rpc_token_option(fn: F) -> F:
    """``--rpc-token`` (also ``$TDML_RPC_TOKEN``) for blob uploads, with ``--home`` naming a node whose cookie to use."""
    fn = click.option(
        "--rpc-token", envvar="TDML_RPC_TOKEN", help="Bearer token for blob uploads (else the cookie of --home)."
    )(fn)
    return click.option(
        "--home", "token_home", type=click.Path(exists=True, path_type=Path),
        help="A local node's home: its data/rpc.cookie authorizes blob uploads.",
    )(fn)


def blob_client(url: str, rpc_token: str | None, token_home: Path | None) -> Any:
    """A ``NodeClient`` for ``url`` that can upload blobs: with the token given, or the home's cookie."""
    from tdml_node.client import NodeClient
    from tdml_node.config import cookie_file

    return NodeClient(url, token=rpc_token or None, cookie=cookie_file(token_home) if token_home else None)


def passphrase_option(fn: F) -> F:
    return click.option("--passphrase-file", type=click.Path(exists=True, path_type=Path), help=PASS_HELP)(fn)


def home_option(*, exists: bool = False) -> Callable[[F], F]:
    return click.option("--home", type=click.Path(exists=exists, path_type=Path), required=True, help=HOME_HELP)


def read_passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> str:
    if passphrase_file is not None:
        return passphrase_file.read_text().rstrip("\n")
    env = os.environ.get("TDML_PASSPHRASE")
    if env is not None:
        return env
    value: str = click.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm)
    return value


def is_insecure_key(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("insecure"))
    except (OSError, ValueError):
        return False


def load_key(path: Path, passphrase_file: Path | None, *, allow_insecure: bool = True) -> Keypair:
    """A key file's key pair, asking for the passphrase only when the file is encrypted."""
    try:
        passphrase = None if is_insecure_key(path) else read_passphrase(passphrase_file)
        return read_key_file(path, passphrase, allow_insecure=allow_insecure)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
