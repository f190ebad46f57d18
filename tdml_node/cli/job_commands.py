"""``tdml-node job``, ``reference`` and ``model export``: training jobs, their reference run, their models.

Failures become one line in ``cli.errors``; job ids and preset names are
checked as arguments, before any call.

This module must never hold node logic: it builds specs, sends and shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tdml_node.cli.options import (
    JOB_ID,
    blob_client,
    check_preset,
    key_option,
    load_named_key,
    load_preset,
    passphrase_option,
    rpc_token_option,
    url_option,
)

JOB_HELP = "Job preset (see `tdml-node job presets`)."
TEXT_HELP = "Text file (the chars-transformer presets)."
SPEC_HELP = "Job spec file (TOML; `tdml-node job presets NAME` prints one to start from)."
DATA_HELP = "Your data for --spec: .npz (x, y[, x_test, y_test]), .csv (label column named in the spec) or text."


@click.group()
def job() -> None:
    """Submit and inspect training jobs."""


@job.command("presets")
@click.argument("name", required=False)
@click.option("--names", is_flag=True, help="Print only the preset names.")
def job_presets(name: str | None, names: bool) -> None:
    """Print the job presets as spec files (TOML), or only NAME's, to copy and edit.

    `tdml-node job presets digits-mlp > job.toml` writes a file that
    `tdml-node job submit --spec job.toml` submits unchanged.
    """
    from tdml_node.work.jobs import job_names
    from tdml_node.work.specfile import preset_file

    if name is not None and name not in job_names():
        raise click.ClickException(f"unknown preset {name!r}; presets: {', '.join(job_names())}")
    for preset in [name] if name is not None else job_names():
        if names:
            click.echo(preset)
            continue
        if name is None:
            click.echo(f"# ===== {preset} =====")
        click.echo(preset_file(preset))


@job.command("submit")
@click.option("--job", "job_name", default="digits-mlp", show_default=True, callback=check_preset, help=JOB_HELP)
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=SPEC_HELP)
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=DATA_HELP)
@click.option("--steps", type=click.IntRange(1), help="Override the number of steps.")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help=TEXT_HELP)
@key_option()
@passphrase_option
@click.option("--budget", type=int, help="Escrowed reward budget (default: enough for every unit).")
@click.option(
    "--private",
    is_flag=True,
    help="Seal the dataset: it goes up encrypted, its key sealed to every validator and trainer the node knows; "
    "other peers, RPC users and a copy of a node's disk see only ciphertext (docs/privacy.md).",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=60,
    show_default=True,
    help="Seconds to wait for the job to be on the chain before printing its id (0: print at once).",
)
@url_option
@rpc_token_option
def job_submit(
    job_name: str,
    spec_path: Path | None,
    data_path: Path | None,
    steps: int | None,
    text_path: Path | None,
    key_ref: str,
    keys_dir: Path | None,
    passphrase_file: Path | None,
    budget: int | None,
    private: bool,
    wait_s: float,
    url: str,
    rpc_token: str | None,
    token_home: Path | None,
) -> None:
    """Upload a job's dataset to the node and submit the job; prints the job id.

    The job is a preset (--job) or a spec file (--spec) with your data
    (--data). KEY pays: a name from `tdml-node keys list` or a key file. The
    id is printed once a block holds the job, so `job show` finds it at once.
    The upload needs the node's token: --rpc-token, $TDML_RPC_TOKEN, or
    --home of a local node (its cookie).
    """
    import dataclasses
    import time

    from tdml_node.sdk import submit_spec
    from tdml_node.work.specfile import parse_spec_file
    from tdml_node.work.userdata import prepare_job

    dataset: bytes | None
    if spec_path is not None:
        spec, dataset = prepare_job(parse_spec_file(spec_path), data_path)
        if steps is not None:
            spec = dataclasses.replace(spec, steps=steps)
    elif data_path is not None:
        raise click.UsageError("--data goes with --spec FILE")
    else:
        spec, dataset = load_preset(job_name, steps, text_path)
    key = load_named_key(key_ref, keys_dir, passphrase_file)
    client = blob_client(url, rpc_token, token_home)
    if private and dataset is None:
        raise click.UsageError("--private seals the dataset you upload: give --data (or a preset) with it")
    job_id = submit_spec(client, key, spec, dataset, budget, private=private)
    deadline = time.monotonic() + wait_s
    while wait_s and client.call("tdml_getJob", job_id) is None:
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"job {job_id} was sent but no block held it within {wait_s:g}s; "
                "is the chain making blocks (`tdml-node rpc tdml_blockNumber`)?"
            )
        time.sleep(0.2)
    click.echo(job_id)


@job.command("list")
@url_option
def job_list(url: str) -> None:
    """List the chain's jobs."""
    from tdml_node.client import NodeClient

    click.echo(json.dumps(NodeClient(url).call("tdml_listJobs"), indent=2))


@job.command("show")
@click.argument("job_id", type=JOB_ID)
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON (losses as numbers).")
@url_option
def job_show(job_id: str, as_json: bool, url: str) -> None:
    """Show one job: status, step, last loss and accuracy, trainers (--json: everything)."""
    from tdml_node.cli.job_view import job_record, job_table
    from tdml_node.client import NodeClient

    view = NodeClient(url).call("tdml_getJob", job_id)
    if view is None:
        raise click.ClickException(f"no job {job_id} on this chain (`tdml-node job list` shows them)")
    click.echo(json.dumps(job_record(view), indent=2) if as_json else "\n".join(job_table(view)))


@click.command()
@click.option("--job", "job_name", default="digits-mlp", show_default=True, callback=check_preset, help=JOB_HELP)
@click.option("--steps", type=click.IntRange(1), help="Override the number of steps.")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help=TEXT_HELP)
def reference(job_name: str, steps: int | None, text_path: Path | None) -> None:
    """Train a job in this one process, with no chain, and print the final model state root.

    The chain must reach the same root bit for bit.
    """
    from tdml_node.work.reference import run_reference

    spec, dataset = load_preset(job_name, steps, text_path)
    result = run_reference(spec, dataset)
    click.echo(f"0x{result.final_root.hex()}")


@click.group()
def model() -> None:
    """Export trained models."""


@model.command("export")
@click.argument("job_id", type=JOB_ID)
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
        raise click.ClickException(f"no job {job_id} on this chain (`tdml-node job list` shows them)")
    spec = decode_as(bytes.fromhex(client.call("tdml_getJobSpec", job_id).removeprefix("0x")), JobSpec)
    state = client.get_blob(view["modelRoot"])
    export_model(spec, state, out, lambda digest: client.get_blob(digest.hex()))
    click.echo(f"wrote {out} (step {view['step']}, model root {view['modelRoot']})")
