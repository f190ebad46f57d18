"""``tdml-node job``, ``reference`` and ``model export``: training jobs, their reference run, their models.

This module must never hold node logic: it builds specs, sends and shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tdml_node.cli.options import load_key, passphrase_option, url_option

JOB_HELP = "Job preset (see `tdml-node job presets`)."
TEXT_HELP = "Text file (chars-transformer)."
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
@click.option("--job", "job_name", default="digits-mlp", show_default=True, help=JOB_HELP)
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=SPEC_HELP)
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=DATA_HELP)
@click.option("--steps", type=click.IntRange(1), help="Override the number of steps.")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help=TEXT_HELP)
@click.option("--key", "key_file", type=click.Path(exists=True, path_type=Path), required=True, help="Key file of the paying account.")
@passphrase_option
@click.option("--budget", type=int, help="Escrowed reward budget (default: enough for every unit).")
@url_option
def job_submit(
    job_name: str,
    spec_path: Path | None,
    data_path: Path | None,
    steps: int | None,
    text_path: Path | None,
    key_file: Path,
    passphrase_file: Path | None,
    budget: int | None,
    url: str,
) -> None:
    """Upload a job's dataset to the node and submit the job: a preset (--job), or a spec file (--spec) and your data (--data)."""
    import dataclasses

    from tdml_node.client import NodeClient, RpcCallError
    from tdml_node.sdk import submit_spec
    from tdml_node.work.jobs import get_job
    from tdml_node.work.specfile import SpecFileError, parse_spec_file
    from tdml_node.work.userdata import DataFileError, prepare_job

    dataset: bytes | None
    if spec_path is not None:
        try:
            spec, dataset = prepare_job(parse_spec_file(spec_path), data_path)
        except (SpecFileError, DataFileError) as exc:
            raise click.ClickException(str(exc)) from exc
        if steps is not None:
            spec = dataclasses.replace(spec, steps=steps)
    elif data_path is not None:
        raise click.ClickException("--data goes with --spec FILE")
    else:
        spec, dataset = get_job(job_name, steps=steps, text_path=text_path)
    key = load_key(key_file, passphrase_file)
    try:
        job_id = submit_spec(NodeClient(url), key, spec, dataset, budget)
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
