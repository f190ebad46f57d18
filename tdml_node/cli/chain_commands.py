"""``tdml-node rpc``, ``register`` and ``transfer``: talking to a running node.

Failures (an unreachable node, an RPC error) are turned into one line by
``cli.errors``, not here. This module must never hold node logic: it
parses, signs and sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tdml_node.cli.options import (
    home_option,
    home_rpc_url,
    home_url_option,
    key_option,
    load_key,
    load_named_key,
    passphrase_option,
    url_option,
)
from tdml_node.config import load_config


@click.command("rpc")
@click.argument("method")
@click.argument("params", nargs=-1)
@url_option
def rpc_call(method: str, params: tuple[str, ...], url: str) -> None:
    """Call a JSON-RPC METHOD; each PARAM is read as JSON, else taken as a string.

    Example: tdml-node rpc tdml_getBlockByNumber latest false
    """
    from tdml_node.client import NodeClient

    parsed: list[Any] = []
    for p in params:
        try:
            parsed.append(json.loads(p))
        except ValueError:
            parsed.append(p)
    click.echo(json.dumps(NodeClient(url).call(method, *parsed), indent=2))


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
@key_option(required=False, help="Register this key (a name or a file) instead of HOME's node key.")
@passphrase_option
@home_url_option
def register(
    home: Path,
    stake: int,
    roles: str,
    key_ref: str | None,
    keys_dir: Path | None,
    passphrase_file: Path | None,
    url: str | None,
) -> None:
    """Register this node (its key in HOME) as trainer and/or validator, bonding STAKE.

    The node's account must hold the stake; fund it with a transfer first.
    The node is reached at HOME's RPC port unless --url says otherwise.
    """
    from consensus.types import ROLE_TRAINER, ROLE_VALIDATOR
    from tdml_node.client import NodeClient, make_register

    config = load_config(home)
    role_bits = {"trainer": ROLE_TRAINER, "validator": ROLE_VALIDATOR, "both": ROLE_TRAINER | ROLE_VALIDATOR}[roles]
    if key_ref is None:
        key = load_key(config.key_file, passphrase_file)
    else:
        key = load_named_key(key_ref, keys_dir, passphrase_file)
    client = NodeClient(url or home_rpc_url(config.rpc_host, config.rpc_port))
    chain_id = client.call("tdml_nodeInfo")["chainId"]
    endpoint = config.external_address or f"{config.p2p_host}:{config.p2p_port}"
    tx = make_register(key, chain_id, client.next_nonce(key), stake, role_bits, endpoint)
    click.echo(client.send_transaction(tx))


@click.command()
@key_option()
@click.option("--to", "to_hex", required=True, help="Recipient address (0x, 20 bytes) or public key (32 bytes).")
@click.option("--amount", type=click.IntRange(1), required=True, help="Amount to transfer.")
@passphrase_option
@url_option
def transfer(
    key_ref: str, keys_dir: Path | None, to_hex: str, amount: int, passphrase_file: Path | None, url: str
) -> None:
    """Send AMOUNT from the key's account to another account."""
    from consensus.crypto import address_of
    from tdml_node.client import NodeClient, make_transfer

    try:
        to = bytes.fromhex(to_hex.removeprefix("0x"))
    except ValueError as exc:
        raise click.BadParameter("not hex", param_hint="--to") from exc
    if len(to) == 32:
        to = address_of(to)
    if len(to) != 20:
        raise click.BadParameter("an address is 20 bytes (or a 32-byte public key)", param_hint="--to")
    key = load_named_key(key_ref, keys_dir, passphrase_file)
    client = NodeClient(url)
    chain_id = client.call("tdml_nodeInfo")["chainId"]
    click.echo(client.send_transaction(make_transfer(key, chain_id, client.next_nonce(key), to, amount)))
