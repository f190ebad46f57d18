"""``tdml-node init``, ``genesis new|show`` and ``run``: making a node and running it.

This module must never hold node logic: it parses, loads and hands over.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from consensus.crypto import Keypair
from consensus.types import PublicKey
from tdml_node.cli.options import home_option, is_insecure_key, passphrase_option, read_passphrase
from tdml_node.config import ConfigError, NodeConfig, load_config, write_config
from tdml_node.devtools.catalogue import ALL_BEHAVIOURS
from tdml_node.genesis import GenesisError, compose_genesis, read_genesis, write_genesis
from tdml_node.keys import KeyFileError, read_key_file, read_public_key, write_key_file
from tdml_node.logfmt import FORMATS, LEVELS


@click.command()
@home_option()
@click.option("--insecure-dev-key", is_flag=True, help="Store the key unencrypted (throwaway dev networks only).")
@passphrase_option
@click.option("--rpc-port", type=int, default=8645, show_default=True, help="JSON-RPC port (bound to 127.0.0.1).")
@click.option("--p2p-port", type=int, default=26656, show_default=True, help="Peer-to-peer port.")
@click.option("--force", is_flag=True, help="Overwrite an existing key and config.")
def init(
    home: Path, insecure_dev_key: bool, passphrase_file: Path | None, rpc_port: int, p2p_port: int, force: bool
) -> None:
    """Create a node key (encrypted with a passphrase) and a default config in HOME."""
    config = NodeConfig(home=home, rpc_port=rpc_port, p2p_port=p2p_port, dev=insecure_dev_key)
    if config.key_file.exists() and not force:
        raise click.ClickException(f"{config.key_file} exists; use --force to replace it")
    keypair = Keypair.generate()
    passphrase = None if insecure_dev_key else read_passphrase(passphrase_file, confirm=True)
    write_key_file(config.key_file, keypair, passphrase, insecure=insecure_dev_key)
    write_config(config)
    click.echo(f"node id (public key): 0x{keypair.public_key.hex()}")
    click.echo(f"address:              0x{keypair.address.hex()}")
    click.echo(f"wrote {config.key_file} and {home / 'config.toml'}")


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
@click.option("--client", "clients", multiple=True, help="Public key (0x hex) of an account to fund (repeatable).")
@click.option("--stake", type=int, default=1_000_000, show_default=True, help="Stake bonded by each node.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the genesis file.")
def genesis_new(chain_id: str, node_homes: tuple[Path, ...], clients: tuple[str, ...], stake: int, out: Path) -> None:
    """Write a genesis that registers the given nodes and funds the given clients."""
    nodes = []
    for home in node_homes:
        cfg = load_config(home)
        endpoint = cfg.external_address or f"{cfg.p2p_host}:{cfg.p2p_port}"
        nodes.append((PublicKey(read_public_key(cfg.key_file)), endpoint))
    client_keys = [PublicKey(bytes.fromhex(c.removeprefix("0x"))) for c in clients]
    write_genesis(out, compose_genesis(chain_id, nodes, clients=client_keys, stake=stake))
    click.echo(f"wrote {out}")


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
    "--byzantine",
    type=click.Choice(ALL_BEHAVIOURS),
    help="TEST NETWORKS ONLY (refused without --dev): misbehave on purpose, for the adversarial suite and demos. "
    "Trainers: zero, random, scale, shift, noise, skip-steps, wrong-shard, stale-parent, copy, replay-old, withhold; "
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
    byzantine: str | None,
) -> None:
    """Run a node: join the chain of its genesis, train, validate, and serve JSON-RPC."""
    from tdml_node.app import serve
    from tdml_node.logfmt import configure_logging

    try:
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
                "byzantine": (byzantine,) if byzantine else (),
            },
        )
        genesis_doc = read_genesis(genesis_path or config.genesis_file)
        needs_pass = not is_insecure_key(config.key_file)
        keypair = read_key_file(
            config.key_file, read_passphrase(passphrase_file) if needs_pass else None, allow_insecure=config.dev
        )
    except (ConfigError, GenesisError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(config.log_level, config.log_format)
    sys.exit(asyncio.run(serve(config, keypair, genesis_doc)))
