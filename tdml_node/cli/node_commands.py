"""``tdml-node init``, ``genesis new|show`` and ``run``: making a node and running it.

Dev options follow the genesis: ``run`` takes ``dev`` only on a dev chain
(``genesis.is_dev_chain``), and ``init --insecure-dev-key`` refuses a home
whose genesis is not one. This module must never hold node logic: it
parses, loads and hands over.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from consensus.crypto import Keypair
from consensus.types import PublicKey
from tdml_node.cli.options import (
    home_option,
    is_insecure_key,
    keys_dir_option,
    passphrase_option,
    read_passphrase,
)
from tdml_node.config import MODEL_STATES, NodeConfig, load_config, write_config
from tdml_node.devtools.catalogue import ALL_BEHAVIOURS
from tdml_node.genesis import (
    DEV_CHAIN_SUFFIXES,
    compose_genesis,
    is_dev_chain,
    read_genesis,
    write_genesis,
)
from tdml_node.keys import read_key_file, read_public_key, write_key_file
from tdml_node.logfmt import FORMATS, LEVELS

DEV_CHAIN_RULE = f"a dev chain's id ends in {' or '.join(DEV_CHAIN_SUFFIXES)}"


@click.command()
@home_option()
@click.option(
    "--insecure-dev-key",
    is_flag=True,
    help="Store the key unencrypted and set dev = true (throwaway dev chains only; refused for a non-dev genesis).",
)
@passphrase_option
@click.option("--genesis", "genesis_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Copy this genesis into HOME (the network's genesis.bin).")
@click.option("--rpc-port", type=int, default=8645, show_default=True, envvar="TDML_RPC_PORT", show_envvar=True,
              help="JSON-RPC port (bound to 127.0.0.1).")
@click.option("--p2p-port", type=int, default=26656, show_default=True, envvar="TDML_P2P_PORT", show_envvar=True,
              help="Peer-to-peer port.")
@click.option("--force", is_flag=True, help="Overwrite an existing key and config.")
def init(
    home: Path,
    insecure_dev_key: bool,
    passphrase_file: Path | None,
    genesis_path: Path | None,
    rpc_port: int,
    p2p_port: int,
    force: bool,
) -> None:
    """Create a node key (encrypted with a passphrase) and a commented config.toml in HOME."""
    config = NodeConfig(home=home, rpc_port=rpc_port, p2p_port=p2p_port, dev=insecure_dev_key)
    if config.key_file.exists() and not force:
        raise click.ClickException(f"{config.key_file} exists; use --force to replace it")
    source = genesis_path or (config.genesis_file if config.genesis_file.exists() else None)
    chain = read_genesis(source) if source is not None else None
    if insecure_dev_key and chain is not None and not is_dev_chain(chain.chain_id):
        raise click.ClickException(
            f"chain {chain.chain_id!r} is not a dev chain ({DEV_CHAIN_RULE}): "
            "--insecure-dev-key is for throwaway dev chains only; drop it and give a passphrase"
        )
    keypair = Keypair.generate()
    passphrase = None if insecure_dev_key else read_passphrase(passphrase_file, confirm=True)
    write_key_file(config.key_file, keypair, passphrase, insecure=insecure_dev_key)
    write_config(config)
    if genesis_path is not None:
        write_genesis(config.genesis_file, read_genesis(genesis_path))
    click.echo(f"node id (public key): 0x{keypair.public_key.hex()}")
    click.echo(f"address:              0x{keypair.address.hex()}")
    click.echo(f"wrote {config.key_file} and {home / 'config.toml'}")
    if insecure_dev_key:
        click.echo(f"dev = true: `tdml-node run` takes it only on a dev chain ({DEV_CHAIN_RULE}).")
    if chain is None:
        click.echo(f"next: put the chain's genesis in {config.genesis_file} "
                   "(`tdml-node genesis new` makes one for a new chain).")
    click.echo(
        f"to join a running network: tdml-node run --home {home} --bootstrap HOST:PORT "
        "(a peer's p2p address); without --bootstrap a node that is not a validator of its genesis stays at height 0."
    )


@click.group()
def genesis() -> None:
    """Compose or inspect a genesis file."""


@genesis.command("new")
@click.option("--chain-id", required=True, help="The chain's name, part of every signature's domain.")
@click.option(
    "--node",
    "node_homes",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A node home to register as trainer and validator (repeatable).",
)
@click.option(
    "--client",
    "clients",
    multiple=True,
    help="An account to fund: 0x address, 0x public key, or a key name from `tdml-node keys` (repeatable).",
)
@keys_dir_option
@click.option("--stake", type=int, default=1_000_000, show_default=True, help="Stake bonded by each node.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the genesis file.")
def genesis_new(
    chain_id: str, node_homes: tuple[Path, ...], clients: tuple[str, ...], keys_dir: Path | None, stake: int, out: Path
) -> None:
    """Write a genesis that registers the given nodes and funds the given clients.

    The nodes are the chain's first validators and trainers; a chain with none
    never makes a block. A chain id ending in -dev or -devnet marks a throwaway
    dev chain, the only kind whose nodes take dev options.
    """
    if not node_homes:
        click.echo("warning: no --node given: the chain has no validators, so it will never make a block", err=True)
    nodes = []
    for home in node_homes:
        cfg = load_config(home)
        endpoint = cfg.external_address or f"{cfg.p2p_host}:{cfg.p2p_port}"
        nodes.append((PublicKey(read_public_key(cfg.key_file)), endpoint))
    accounts = [_account(c, keys_dir) for c in clients]
    write_genesis(out, compose_genesis(chain_id, nodes, clients=accounts, stake=stake))
    click.echo(f"wrote {out}")


def _account(value: str, keys_dir: Path | None) -> bytes:
    """A ``--client`` value as an address or public key: 0x hex of 20 or 32 bytes, else a key name."""
    from tdml_node.keystore import default_keys_dir, get_key

    if value.startswith("0x"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raw = b""
        if len(raw) not in (20, 32):
            raise click.BadParameter(f"{value!r} is not a 0x address (20 bytes) or public key (32)", param_hint="--client")
        return raw
    return get_key(keys_dir or default_keys_dir(), value).address


@genesis.command("show")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def genesis_show(path: Path) -> None:
    """Print a genesis file as JSON, with its hash."""
    from consensus.transition import compute_genesis_hash
    from tdml_node.jsonview import to_json

    g = read_genesis(path)
    click.echo(json.dumps({"hash": "0x" + compute_genesis_hash(g).hex(), "genesis": to_json(g)}, indent=2))


@click.command()
@home_option()
@click.option("--genesis", "genesis_path", type=click.Path(exists=True, path_type=Path), help="Genesis file (default HOME/genesis.bin).")
@click.option("--rpc-host", help="Address the JSON-RPC server binds (default 127.0.0.1).")
@click.option("--rpc-port", type=int, help="JSON-RPC port.")
@click.option("--p2p-port", type=int, help="Peer-to-peer port.")
@click.option("--bootstrap", multiple=True, help="HOST:PORT of a peer to join through (repeatable).")
@click.option("--dev", is_flag=True, default=None, help="Dev network: accept unencrypted keys and test-only options.")
@passphrase_option
@click.option("--log-level", type=click.Choice(LEVELS), help="Log verbosity (default info; debug adds a line per block and vote).")
@click.option("--log-format", type=click.Choice(FORMATS), help="Log lines on stderr: logfmt key=value (default) or one JSON object each.")
@click.option(
    "--model-state",
    type=click.Choice(MODEL_STATES),
    help="all (default): recompute every step and hold every stage of every job. assigned: a trainer that does "
    "not validate takes step outcomes from the certified blocks and fetches only the model partitions it is dealt.",
)
@click.option(
    "--byzantine",
    type=click.Choice(ALL_BEHAVIOURS),
    help="TEST NETWORKS ONLY (refused without --dev): misbehave on purpose, for the adversarial suite and demos. "
    "Trainers: zero, random, scale, shift, noise, skip-steps, wrong-shard, stale-parent, copy, replay-old, withhold; "
    "stage trainers (pipeline jobs): forge-gradient, forge-inputs, skip-micro; "
    "validators: lazy, accuse, equivocate, approve-invalid.",
)
def run(
    home: Path,
    genesis_path: Path | None,
    rpc_host: str | None,
    rpc_port: int | None,
    p2p_port: int | None,
    bootstrap: tuple[str, ...],
    dev: bool | None,
    passphrase_file: Path | None,
    log_level: str | None,
    log_format: str | None,
    model_state: str | None,
    byzantine: str | None,
) -> None:
    """Run a node: join the chain of its genesis, train, validate, and serve JSON-RPC."""
    from tdml_node.app import serve
    from tdml_node.logfmt import configure_logging

    config = load_config(
        home,
        {
            "rpc_host": rpc_host,
            "rpc_port": rpc_port,
            "p2p_port": p2p_port,
            "bootstrap": bootstrap,
            "dev": dev,
            "log_level": log_level,
            "log_format": log_format,
            "model_state": model_state,
            "byzantine": (byzantine,) if byzantine else (),
        },
    )
    genesis_doc = read_genesis(genesis_path or config.genesis_file)
    if config.dev and not is_dev_chain(genesis_doc.chain_id):
        raise click.ClickException(
            f"dev options (--dev or dev = true in {home / 'config.toml'}) are for dev chains only, and chain "
            f"{genesis_doc.chain_id!r} is not one ({DEV_CHAIN_RULE}); set dev = false and use an encrypted key"
        )
    needs_pass = not is_insecure_key(config.key_file)
    keypair = read_key_file(
        config.key_file, read_passphrase(passphrase_file) if needs_pass else None, allow_insecure=config.dev
    )
    configure_logging(config.log_level, config.log_format)
    sys.exit(asyncio.run(serve(config, keypair, genesis_doc)))
