"""``tdml-node devnet``: a local network of node processes that trains a job end to end.

This module must never hold node logic: it hands over to ``tdml_node.devnet``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console


@click.command()
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True, help="Node processes to start.")
@click.option("--steps", type=click.IntRange(1), help="Override the job's number of training steps.")
@click.option("--job", "job_name", default="digits-mlp", show_default=True, help="Job preset (see `tdml-node job presets`).")
@click.option("--text", "text_path", type=click.Path(exists=True, path_type=Path), help="Text file for the chars-transformer presets.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("devnet-model.safetensors"), show_default=True, help="Where to export the trained model.")
@click.option("--dir", "data_dir", type=click.Path(path_type=Path), help="Keep node homes here (default: a temporary directory).")
@click.option("--logs", "logs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("devnet-logs"), show_default=True, help="Where the node logs go (one per node, kept after the run; the previous run's are replaced).")
@click.option("--keep", is_flag=True, help="Keep the temporary node homes (LevelDB, keys, config) after the run.")
@click.option("--no-reference", is_flag=True, help="Skip the single-process reference comparison.")
@click.option("--private", is_flag=True, help="Submit the job private: its dataset sealed, its key sealed to the nodes (docs/privacy.md).")
def devnet(
    nodes: int,
    steps: int | None,
    job_name: str,
    text_path: Path | None,
    out: Path,
    data_dir: Path | None,
    logs_dir: Path,
    keep: bool,
    no_reference: bool,
    private: bool,
) -> None:
    """Start NODES local node processes, train a job on them, and report.

    Each node gets its own keys, LevelDB and ports on 127.0.0.1. The job's
    dataset is uploaded, the job submitted, and progress shown live; at the end
    the trained model is exported as safetensors and its state root compared
    with a single-process reference run of the same job. The node logs stay in
    --logs; the node homes are removed unless --keep or --dir.

    Ctrl-C, SIGTERM or a closed terminal stop every node and exit with 128 +
    the signal's number (130 for Ctrl-C).
    """
    from tdml_node.devnet import DevnetError
    from tdml_node.devnet_live.session import Stopped, run_devnet
    from tdml_node.devnet_live.view import report_table

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough that ids and URLs are never cut
        console = Console(width=200)
    try:
        report = run_devnet(
            nodes=nodes,
            job=job_name,
            steps=steps,
            text_path=text_path,
            out=out,
            data_dir=data_dir,
            logs=logs_dir,
            keep=keep,
            check_reference=not no_reference,
            console=console,
            private=private,
        )
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from exc
    except Stopped as stop:
        sys.exit(stop.exit_code)
    console.print(report_table(report))
    if report.matches_reference is False:
        sys.exit(1)
