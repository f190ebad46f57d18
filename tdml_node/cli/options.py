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


KEYS_DIR_HELP = "Keystore directory (else $TDML_KEYS_DIR, else ~/.config/tdml/keys)."


def keys_dir_option(fn: F) -> F:
    """``--keys-dir``: where named keys live (``tdml_node.keystore``)."""
    return click.option(
        "--keys-dir", type=click.Path(file_okay=False, path_type=Path), envvar="TDML_KEYS_DIR", help=KEYS_DIR_HELP
    )(fn)


def key_option(*, required: bool = True, help: str = "Paying account: a key name (`tdml-node keys list`) or a key file.") -> Callable[[F], F]:
    """``--key NAME|FILE`` and ``--keys-dir``, for commands that sign with an account key."""

    def apply(fn: F) -> F:
        return keys_dir_option(click.option("--key", "key_ref", required=required, help=help)(fn))

    return apply


def load_named_key(key_ref: str, keys_dir: Path | None, passphrase_file: Path | None) -> Keypair:
    """The key pair a ``--key`` value names: a file, else a keystore name."""
    from tdml_node.keystore import default_keys_dir, resolve_key

    return load_key(resolve_key(keys_dir or default_keys_dir(), key_ref), passphrase_file)


class HexId(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2 on
    """A 0x-prefixed hex value of a fixed byte length (a job id, a digest), checked before any call."""

    name = "0xHEX"

    def __init__(self, length: int, what: str) -> None:
        self.length = length
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            raw = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            self.fail(f"{text!r} is not hex; a {self.what} is 0x and {2 * self.length} hex digits", param, ctx)
        if len(raw) != self.length:
            self.fail(
                f"{text!r} is {len(raw)} bytes; a {self.what} is {self.length} (0x and {2 * self.length} hex digits)",
                param,
                ctx,
            )
        return "0x" + raw.hex()


JOB_ID = HexId(32, "job id")


def check_preset(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--job`` callback: an unknown preset is a usage error that lists the known ones."""
    from tdml_node.work.jobs import job_names

    if value not in job_names():
        raise click.BadParameter(f"no preset {value!r}; presets: {', '.join(job_names())}", ctx, param)
    return value


def load_preset(job_name: str, steps: int | None, text_path: Path | None) -> tuple[Any, bytes]:
    """A preset's spec and dataset; a preset that needs an input it lacks is a usage error."""
    from tdml_node.work.jobs import get_job

    try:
        return get_job(job_name, steps=steps, text_path=text_path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def home_url_option(fn: F) -> F:
    """``--url`` for commands that also take ``--home``: by default the home's own RPC port."""
    return click.option(
        "--url", envvar="TDML_RPC", help="Node RPC URL (default: the RPC address in HOME/config.toml)."
    )(fn)


def home_rpc_url(rpc_host: str, rpc_port: int) -> str:
    """The URL that reaches a node's RPC from this machine (a wildcard bind is reached on loopback)."""
    host = "127.0.0.1" if rpc_host in ("", "0.0.0.0", "::") else rpc_host
    return f"http://{host}:{rpc_port}"
