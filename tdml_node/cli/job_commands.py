"""``tdml-node job``, ``reference`` and ``model export``: training jobs, their reference run, their models.

This module must never hold node logic: it builds specs, sends and shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tdml_node.cli.options import (
    blob_client,
    load_key,
    passphrase_option,
    rpc_token_option,
    url_option,
)

JOB_HELP = "Job preset (see `tdml-node job presets`)."
TEXT_HELP = "Text file (chars-transformer)."


@click.group()
def job() -> None:
    """Submit and inspect training jobs."""


@job.command("presets")
@click.option("--names", is_flag=True, help="Print only the preset names.")
def job_presets(names: bool) -> None:
    """List the job presets, each with its whole spec (the chars-transformer's needs a text file)."""
    from tdml_node.jsonview import to_json
    from tdml_node.work.jobs import job_names, preset_spec

    for name in job_names():
        if names:
            click.echo(name)
            continue
        spec = preset_spec(name)
        click.echo(f"{name}:")
        click.echo(json.dumps(to_json(spec) if spec is not None else "needs --text FILE", indent=2))


@job.command("submit")
@click.option("--job", "job_name", default="digits-mlp", show_default=True, help=JOB_HELP)
@click.option("--steps", type=click.IntRange(1), help="Override the number of steps.")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help=TEXT_HELP)
@click.option("--key", "key_file", type=click.Path(exists=True, path_type=Path), required=True, help="Key file of the paying account.")
@passphrase_option
@click.option("--budget", type=int, help="Escrowed reward budget (default: enough for every unit).")
@url_option
@rpc_token_option
def job_submit(
    job_name: str,
    steps: int | None,
    text_path: Path | None,
    key_file: Path,
    passphrase_file: Path | None,
    budget: int | None,
    url: str,
    rpc_token: str | None,
    token_home: Path | None,
) -> None:
    """Upload a preset job's dataset to the node and submit the job.

    The upload needs the node's token: --rpc-token, $TDML_RPC_TOKEN, or --home of a local node (its cookie).
    """
    from tdml_node.client import RpcCallError
    from tdml_node.devnet import submit_job
    from tdml_node.work.jobs import get_job

    spec, dataset = get_job(job_name, steps=steps, text_path=text_path)
    key = load_key(key_file, passphrase_file)
    try:
        client = blob_client(url, rpc_token, token_home)
        chain_id = client.call("tdml_nodeInfo")["chainId"]
        job_id = submit_job(client, key, chain_id, spec, dataset)
    except RpcCallError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(job_id)


@job.command("list")
@url_option
def job_list(url: str) -> None:
    """List the chain's jobs."""
    from tdml_node.client import NodeClient

    click.echo(json.dumps(NodeClient(url).call("tdml_listJobs"), indent=2))


@job.command("show")
@click.argument("job_id")
@url_option
def job_show(job_id: str, url: str) -> None:
    """Show one job: progress, assignment, last outcome and evaluation."""
    from tdml_node.client import NodeClient

    click.echo(json.dumps(NodeClient(url).call("tdml_getJob", job_id), indent=2))


@click.command()
@click.option("--job", "job_name", default="digits-mlp", show_default=True, help=JOB_HELP)
@click.option("--steps", type=click.IntRange(1), help="Override the number of steps.")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help=TEXT_HELP)
def reference(job_name: str, steps: int | None, text_path: Path | None) -> None:
    """Train a job in this one process, with no chain, and print the final model state root.

    The chain must reach the same root bit for bit.
    """
    from tdml_node.work.jobs import get_job
    from tdml_node.work.reference import run_reference

    spec, dataset = get_job(job_name, steps=steps, text_path=text_path)
    result = run_reference(spec, dataset)
    click.echo(f"0x{result.final_root.hex()}")


@click.group()
def model() -> None:
    """Export trained models."""


@model.command("export")
@click.argument("job_id")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the .safetensors file.")
@url_option
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
