"""The ``tdml-node`` command line.

Commands: ``init`` (a node's key and config), ``keys`` (named account keys), ``genesis`` (compose and show),
``run`` (a node), ``devnet`` (a local network training a job end to end),
``rpc`` (call a method), ``register`` and ``transfer``, ``job`` (presets,
submit, list, show), ``reference`` (train a job in one process, no chain)
and ``model export`` (safetensors).

Settings come from the home's ``config.toml`` and are overridden by flags.
Failures become one line and an exit status in ``errors`` (2 usage, 1
runtime, 130 interrupted), not in each command.
This package must never hold node logic: it parses, loads and hands over.
"""

from __future__ import annotations

import click

from tdml_node import __version__
from tdml_node.cli.chain_commands import register, rpc_call, transfer
from tdml_node.cli.devnet_command import devnet
from tdml_node.cli.errors import CliGroup
from tdml_node.cli.job_commands import job, model, reference
from tdml_node.cli.key_commands import keys
from tdml_node.cli.node_commands import genesis, init, run


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tdml-node")
def main() -> None:
    """TDML node: a blockchain whose proof of useful work trains machine-learning models.

    Trainers compute assigned work units of a training job, validators verify
    them by deterministic replay, and Tendermint BFT commits each block and the
    new model state to LevelDB. Start with `tdml-node devnet`.
    """


for command in (init, keys, genesis, run, devnet, rpc_call, register, transfer, job, reference, model):
    main.add_command(command)
