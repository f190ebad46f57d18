"""The ``tdml-node`` command line.

Commands: ``init`` (keys and config), ``genesis`` (compose and show),
``run`` (a node), ``devnet`` (a local network training a job end to end),
``rpc`` (call a method), ``job`` (submit, list, show), ``reference`` (train
a job in one process, no chain) and ``model export`` (safetensors).

Settings come from the home's ``config.toml`` and are overridden by flags.
This module must never hold node logic: it parses, loads and hands over.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from consensus.crypto import Keypair
from tdml_node import __version__
from tdml_node.byzantine import ALL_BEHAVIOURS
from tdml_node.config import ConfigError, NodeConfig, load_config, write_config
from tdml_node.genesis import GenesisError, compose_genesis, read_genesis, write_genesis
from tdml_node.keys import KeyFileError, read_key_file, read_public_key, write_key_file

HOME_HELP = "The node's home directory (config.toml, genesis.bin, node_key.json, data/)."
PASS_HELP = "File holding the key passphrase (else $TDML_PASSPHRASE, else a prompt)."


def _passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> str:
    if passphrase_file is not None:
        return passphrase_file.read_text().rstrip("\n")
    env = os.environ.get("TDML_PASSPHRASE")
    if env is not None:
        return env
    value: str = click.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm)
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tdml-node")
def main() -> None:
    """TDML node: a blockchain whose proof of useful work trains machine-learning models.

    Trainers compute assigned work units of a training job, validators verify
    them by deterministic replay, and Tendermint BFT commits each block and the
    new model state to LevelDB. Start with `tdml-node devnet`.
    """


# ---------------------------------------------------------------- init


@main.command()
@click.option("--home", type=click.Path(path_type=Path), required=True, help=HOME_HELP)
@click.option("--insecure-dev-key", is_flag=True, help="Store the key unencrypted (throwaway dev networks only).")
@click.option("--passphrase-file", type=click.Path(exists=True, path_type=Path), help=PASS_HELP)
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
    passphrase = None if insecure_dev_key else _passphrase(passphrase_file, confirm=True)
    write_key_file(config.key_file, keypair, passphrase, insecure=insecure_dev_key)
    write_config(config)
    click.echo(f"node id (public key): 0x{keypair.public_key.hex()}")
    click.echo(f"address:              0x{keypair.address.hex()}")
    click.echo(f"wrote {config.key_file} and {home / 'config.toml'}")


# ------------------------------------------------------------- genesis


@main.group()
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
    from consensus.types import PublicKey

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


# ----------------------------------------------------------------- run


@main.command()
@click.option("--home", type=click.Path(path_type=Path), required=True, help=HOME_HELP)
@click.option("--genesis", "genesis_path", type=click.Path(exists=True, path_type=Path), help="Genesis file (default HOME/genesis.bin).")
@click.option("--rpc-host", help="Address the JSON-RPC server binds (default 127.0.0.1).")
@click.option("--rpc-port", type=int, help="JSON-RPC port.")
@click.option("--p2p-port", type=int, help="Peer-to-peer port.")
@click.option("--bootstrap", multiple=True, help="HOST:PORT of a peer to join through (repeatable).")
@click.option("--dev", is_flag=True, default=None, help="Dev network: accept unencrypted keys and test-only options.")
@click.option("--passphrase-file", type=click.Path(exists=True, path_type=Path), help=PASS_HELP)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
@click.option(
    "--byzantine",
    type=click.Choice(ALL_BEHAVIOURS),
    help="TEST NETWORKS ONLY (refused without --dev): misbehave on purpose, for the adversarial suite and demos. "
    "Trainers: zero, random, scale, shift, noise, skip-steps, wrong-shard, stale-parent, copy, replay-old, withhold; "
    "validators: lazy, accuse, equivocate, approve-invalid; peers: flood, malformed.",
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
    byzantine: str | None,
) -> None:
    """Run a node: join the chain of its genesis, train, validate, and serve JSON-RPC."""
    from tdml_node.app import configure_logging, serve

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
                "byzantine": (byzantine,) if byzantine else (),
            },
        )
        genesis_doc = read_genesis(genesis_path or config.genesis_file)
        needs_pass = not _is_insecure_key(config.key_file)
        keypair = read_key_file(
            config.key_file, _passphrase(passphrase_file) if needs_pass else None, allow_insecure=config.dev
        )
    except (ConfigError, GenesisError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(config.log_level)
    sys.exit(asyncio.run(serve(config, keypair, genesis_doc)))


def _is_insecure_key(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("insecure"))
    except (OSError, ValueError):
        return False


# -------------------------------------------------------------- devnet


@main.command()
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True, help="Node processes to start.")
@click.option("--steps", type=click.IntRange(1), help="Override the job's number of training steps.")
@click.option("--job", "job_name", default="digits-mlp", show_default=True, help="Job preset (see `tdml-node job presets`).")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help="Text file for the chars-transformer job.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("devnet-model.safetensors"), show_default=True, help="Where to export the trained model.")
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), help="Keep node homes here (default: a temporary directory).")
@click.option("--keep", is_flag=True, help="Keep the temporary node homes after the run.")
@click.option("--no-reference", is_flag=True, help="Skip the single-process reference comparison.")
def devnet(
    nodes: int,
    steps: int | None,
    job_name: str,
    text_path: Path | None,
    out: Path,
    data_dir: Path | None,
    keep: bool,
    no_reference: bool,
) -> None:
    """Start NODES local node processes, train a job on them, and report.

    Each node gets its own keys, LevelDB and ports on 127.0.0.1. The job's
    dataset is uploaded, the job submitted, and progress shown live; at the end
    the trained model is exported as safetensors and its state root compared
    with a single-process reference run of the same job.
    """
    from tdml_node.devnet import DevnetError, print_report, run_devnet

    console = Console()
    try:
        report = run_devnet(
            nodes=nodes,
            job=job_name,
            steps=steps,
            text_path=text_path,
            out=out,
            data_dir=data_dir,
            keep=keep,
            check_reference=not no_reference,
            console=console,
        )
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from exc
    print_report(report, console)
    if report.matches_reference is False:
        sys.exit(1)


# ----------------------------------------------------------------- rpc


@main.command("rpc")
@click.argument("method")
@click.argument("params", nargs=-1)
@click.option("--url", default="http://127.0.0.1:8645", show_default=True, envvar="TDML_RPC", help="Node RPC URL.")
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


# ------------------------------------------------------------ register


@main.command()
@click.option("--home", type=click.Path(exists=True, path_type=Path), required=True, help=HOME_HELP)
@click.option("--stake", type=click.IntRange(1), required=True, help="Amount to bond from the node's balance.")
@click.option(
    "--roles",
    type=click.Choice(["trainer", "validator", "both"]),
    default="trainer",
    show_default=True,
    help="What the node does for the chain.",
)
@click.option("--passphrase-file", type=click.Path(exists=True, path_type=Path), help=PASS_HELP)
@click.option("--url", default="http://127.0.0.1:8645", show_default=True, envvar="TDML_RPC", help="Node RPC URL.")
def register(home: Path, stake: int, roles: str, passphrase_file: Path | None, url: str) -> None:
    """Register this node (its key in HOME) as trainer and/or validator, bonding STAKE.

    The node's account must hold the stake; fund it with a transfer first.
    """
    from consensus.types import ROLE_TRAINER, ROLE_VALIDATOR
    from tdml_node.client import NodeClient, RpcCallError, make_register

    config = load_config(home)
    role_bits = {"trainer": ROLE_TRAINER, "validator": ROLE_VALIDATOR, "both": ROLE_TRAINER | ROLE_VALIDATOR}[roles]
    try:
        insecure = _is_insecure_key(config.key_file)
        key = read_key_file(config.key_file, None if insecure else _passphrase(passphrase_file), allow_insecure=True)
        client = NodeClient(url)
        chain_id = client.call("tdml_nodeInfo")["chainId"]
        endpoint = config.external_address or f"{config.p2p_host}:{config.p2p_port}"
        tx = make_register(key, chain_id, client.next_nonce(key), stake, role_bits, endpoint)
        click.echo(client.send_transaction(tx))
    except (KeyFileError, RpcCallError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--key", "key_file", type=click.Path(exists=True, path_type=Path), required=True, help="Key file of the paying account.")
@click.option("--to", "to_hex", required=True, help="Recipient address (0x, 20 bytes) or public key (32 bytes).")
@click.option("--amount", type=click.IntRange(1), required=True, help="Amount to transfer.")
@click.option("--passphrase-file", type=click.Path(exists=True, path_type=Path), help=PASS_HELP)
@click.option("--url", default="http://127.0.0.1:8645", show_default=True, envvar="TDML_RPC", help="Node RPC URL.")
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
    try:
        insecure = _is_insecure_key(key_file)
        key = read_key_file(key_file, None if insecure else _passphrase(passphrase_file), allow_insecure=True)
        client = NodeClient(url)
        chain_id = client.call("tdml_nodeInfo")["chainId"]
        click.echo(client.send_transaction(make_transfer(key, chain_id, client.next_nonce(key), to, amount)))
    except (KeyFileError, RpcCallError) as exc:
        raise click.ClickException(str(exc)) from exc


# ----------------------------------------------------------------- job


@main.group()
def job() -> None:
    """Submit and inspect training jobs."""


@job.command("presets")
def job_presets() -> None:
    """List the job presets."""
    from tdml_node.work.jobs import job_names

    for name in job_names():
        click.echo(name)


@job.command("submit")
@click.option("--job", "job_name", default="digits-mlp", show_default=True, help="Job preset.")
@click.option("--steps", type=click.IntRange(1), help="Override the number of steps.")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help="Text file (chars-transformer).")
@click.option("--key", "key_file", type=click.Path(exists=True, path_type=Path), required=True, help="Key file of the paying account.")
@click.option("--passphrase-file", type=click.Path(exists=True, path_type=Path), help=PASS_HELP)
@click.option("--budget", type=int, help="Escrowed reward budget (default: enough for every unit).")
@click.option("--url", default="http://127.0.0.1:8645", show_default=True, envvar="TDML_RPC", help="Node RPC URL.")
def job_submit(
    job_name: str,
    steps: int | None,
    text_path: Path | None,
    key_file: Path,
    passphrase_file: Path | None,
    budget: int | None,
    url: str,
) -> None:
    """Upload a preset job's dataset to the node and submit the job."""
    from tdml_node.client import NodeClient, RpcCallError
    from tdml_node.devnet import submit_job
    from tdml_node.work.jobs import get_job

    spec, dataset = get_job(job_name, steps=steps, text_path=text_path)
    insecure = _is_insecure_key(key_file)
    try:
        key = read_key_file(key_file, None if insecure else _passphrase(passphrase_file), allow_insecure=True)
        client = NodeClient(url)
        chain_id = client.call("tdml_nodeInfo")["chainId"]
        job_id = submit_job(client, key, chain_id, spec, dataset)
    except (KeyFileError, RpcCallError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(job_id)


@job.command("list")
@click.option("--url", default="http://127.0.0.1:8645", show_default=True, envvar="TDML_RPC", help="Node RPC URL.")
def job_list(url: str) -> None:
    """List the chain's jobs."""
    from tdml_node.client import NodeClient

    click.echo(json.dumps(NodeClient(url).call("tdml_listJobs"), indent=2))


@job.command("show")
@click.argument("job_id")
@click.option("--url", default="http://127.0.0.1:8645", show_default=True, envvar="TDML_RPC", help="Node RPC URL.")
def job_show(job_id: str, url: str) -> None:
    """Show one job: progress, assignment, last outcome and evaluation."""
    from tdml_node.client import NodeClient

    click.echo(json.dumps(NodeClient(url).call("tdml_getJob", job_id), indent=2))


# ----------------------------------------------------------- reference


@main.command()
@click.option("--job", "job_name", default="digits-mlp", show_default=True, help="Job preset.")
@click.option("--steps", type=click.IntRange(1), help="Override the number of steps.")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help="Text file (chars-transformer).")
def reference(job_name: str, steps: int | None, text_path: Path | None) -> None:
    """Train a job in this one process, with no chain, and print the final model state root.

    The chain must reach the same root bit for bit.
    """
    from tdml_node.work.jobs import get_job
    from tdml_node.work.reference import run_reference

    spec, dataset = get_job(job_name, steps=steps, text_path=text_path)
    result = run_reference(spec, dataset)
    click.echo(f"0x{result.final_root.hex()}")


# --------------------------------------------------------------- model


@main.group()
def model() -> None:
    """Export trained models."""


@model.command("export")
@click.argument("job_id")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the .safetensors file.")
@click.option("--url", default="http://127.0.0.1:8645", show_default=True, envvar="TDML_RPC", help="Node RPC URL.")
def model_export(job_id: str, out: Path, url: str) -> None:
    """Export a job's current model as safetensors that plain PyTorch loads.

    Load it with the registry model: tdml_node.work.export.load_exported(path).
    """
    from consensus.codec import decode_as
    from consensus.types import JobSpec
    from tdml_node.client import NodeClient
    from tdml_node.work.export import export_model

    client = NodeClient(url)
    view = client.call("tdml_getJob", job_id)
    if view is None:
        raise click.ClickException(f"no job {job_id}")
    spec = decode_as(bytes.fromhex(client.call("tdml_getJobSpec", job_id).removeprefix("0x")), JobSpec)
    state = client.get_blob(view["modelRoot"])
    export_model(spec, state, out)
    click.echo(f"wrote {out} (step {view['step']}, model root {view['modelRoot']})")
