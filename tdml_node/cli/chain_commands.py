"""``tdml-node rpc``, ``register`` and ``transfer``: talking to a running node.

This module must never hold node logic: it parses, signs and sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tdml_node.cli.options import home_option, load_key, passphrase_option, url_option
from tdml_node.config import load_config


@click.command("rpc")
@click.argument("method")
@click.argument("params", nargs=-1)
@url_option
def rpc_call(method: str, params: tuple[str, ...], url: str) -> None:
    """Call a JSON-RPC METHOD; each PARAM is read as JSON, else taken as a string.

    Example: tdml-node rpc tdml_getBlockByNumber latest false
    """
    from tdml_node.client import NodeClient, RpcCallError

    parsed: list[Any] = []
    for p in params:
        try:
            parsed.append(json.loads(p))
        except ValueError:
            parsed.append(p)
    try:
        result = NodeClient(url).call(method, *parsed)
    except RpcCallError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    click.echo(json.dumps(result, indent=2))


@click.command()
@home_option(exists=True)
@click.option("--stake", type=click.IntRange(1), required=True, help="Amount to bond from the node's balance.")
@click.option(
    "--roles",
    type=click.Choice(["trainer", "validator", "both"]),
    default="trainer",
    show_default=True,
    help="What the node does for the chain.",
)
@passphrase_option
@url_option
def register(home: Path, stake: int, roles: str, passphrase_file: Path | None, url: str) -> None:
    """Register this node (its key in HOME) as trainer and/or validator, bonding STAKE.

    The node's account must hold the stake; fund it with a transfer first.
    """
    from consensus.types import ROLE_TRAINER, ROLE_VALIDATOR
    from tdml_node.client import NodeClient, RpcCallError, make_register

    config = load_config(home)
    role_bits = {"trainer": ROLE_TRAINER, "validator": ROLE_VALIDATOR, "both": ROLE_TRAINER | ROLE_VALIDATOR}[roles]
    key = load_key(config.key_file, passphrase_file)
    try:
        client = NodeClient(url)
        chain_id = client.call("tdml_nodeInfo")["chainId"]
        endpoint = config.external_address or f"{config.p2p_host}:{config.p2p_port}"
        tx = make_register(key, chain_id, client.next_nonce(key), stake, role_bits, endpoint)
        click.echo(client.send_transaction(tx))
    except RpcCallError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--key", "key_file", type=click.Path(exists=True, path_type=Path), required=True, help="Key file of the paying account.")
@click.option("--to", "to_hex", required=True, help="Recipient address (0x, 20 bytes) or public key (32 bytes).")
@click.option("--amount", type=click.IntRange(1), required=True, help="Amount to transfer.")
@passphrase_option
@url_option
def transfer(key_file: Path, to_hex: str, amount: int, passphrase_file: Path | None, url: str) -> None:
    """Send AMOUNT from the key's account to another account."""
    from consensus.crypto import address_of
    from tdml_node.client import NodeClient, RpcCallError, make_transfer

    try:
        to = bytes.fromhex(to_hex.removeprefix("0x"))
    except ValueError as exc:
        raise click.BadParameter("not hex", param_hint="--to") from exc
    if len(to) == 32:
        to = address_of(to)
    if len(to) != 20:
        raise click.BadParameter("an address is 20 bytes (or a 32-byte public key)", param_hint="--to")
    key = load_key(key_file, passphrase_file)
    try:
        client = NodeClient(url)
        chain_id = client.call("tdml_nodeInfo")["chainId"]
        click.echo(client.send_transaction(make_transfer(key, chain_id, client.next_nonce(key), to, amount)))
    except RpcCallError as exc:
        raise click.ClickException(str(exc)) from exc
