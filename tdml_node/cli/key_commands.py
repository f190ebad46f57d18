"""``tdml-node keys new|list|show|address``: named account keys for clients and funders.

A node has its key in its home (``init``); the accounts that pay for jobs
and transfers have theirs here, by name, and ``job submit``, ``transfer``
and ``register`` take ``--key NAME``. This module must never print a seed
or a passphrase, nor hold node logic.
"""

from __future__ import annotations

from pathlib import Path

import click

from tdml_node.cli.options import (
    is_insecure_key,
    keys_dir_option,
    passphrase_option,
    read_passphrase,
)


def _dir(keys_dir: Path | None) -> Path:
    from tdml_node.keystore import default_keys_dir

    return keys_dir or default_keys_dir()


@click.group()
def keys() -> None:
    """Make and inspect named account keys (encrypted like node keys)."""


@keys.command("new")
@click.argument("name")
@keys_dir_option
@passphrase_option
@click.option("--insecure-dev-key", is_flag=True, help="Store the key unencrypted (throwaway dev networks only).")
def keys_new(name: str, keys_dir: Path | None, passphrase_file: Path | None, insecure_dev_key: bool) -> None:
    """Make a key NAME, sealed with a passphrase, and print its address."""
    from tdml_node.keystore import create_key, key_path

    key_path(_dir(keys_dir), name)  # a bad name fails before the passphrase prompt
    passphrase = None if insecure_dev_key else read_passphrase(passphrase_file, confirm=True)
    stored = create_key(_dir(keys_dir), name, passphrase, insecure=insecure_dev_key)
    click.echo(f"address:    0x{stored.address.hex()}")
    click.echo(f"public key: 0x{stored.public_key.hex()}")
    click.echo(f"wrote {stored.path}")


@keys.command("list")
@keys_dir_option
def keys_list(keys_dir: Path | None) -> None:
    """List the keystore's keys: name and address."""
    from tdml_node.keystore import list_keys

    found = list_keys(_dir(keys_dir))
    if not found:
        click.echo(f"no keys in {_dir(keys_dir)} (make one: tdml-node keys new NAME)", err=True)
    width = max((len(k.name) for k in found), default=0)
    for k in found:
        click.echo(f"{k.name:<{width}}  0x{k.address.hex()}")


@keys.command("show")
@click.argument("name")
@keys_dir_option
def keys_show(name: str, keys_dir: Path | None) -> None:
    """Show a key's address, public key, file and whether it is encrypted (no passphrase needed)."""
    from tdml_node.keystore import get_key

    k = get_key(_dir(keys_dir), name)
    click.echo(f"name:       {k.name}")
    click.echo(f"address:    0x{k.address.hex()}")
    click.echo(f"public key: 0x{k.public_key.hex()}")
    click.echo(f"file:       {k.path}")
    click.echo(f"encrypted:  {'no (dev key)' if is_insecure_key(k.path) else 'yes'}")


@keys.command("address")
@click.argument("name")
@keys_dir_option
@click.option("--public-key", is_flag=True, help="Print the 32-byte public key instead.")
def keys_address(name: str, keys_dir: Path | None, public_key: bool) -> None:
    """Print a key's 0x address (for `transfer --to` and `genesis new --client`)."""
    from tdml_node.keystore import get_key

    k = get_key(_dir(keys_dir), name)
    click.echo("0x" + (k.public_key if public_key else k.address).hex())
