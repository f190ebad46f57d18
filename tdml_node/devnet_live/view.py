"""How a devnet snapshot looks: the live rich view, the plain progress line, and the report table.

Pure functions from ``status`` values to renderables and strings, so the view
can be tested by rendering a made-up snapshot. This module must never do I/O,
read a clock or talk to a node.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tdml_node.devnet_live.stages import StagePlan
from tdml_node.devnet_live.status import (
    DevnetReport,
    JobStatus,
    NodeStatus,
    Snapshot,
    StageStatus,
    compute_eta,
    compute_rate,
)

STATE_STYLES = {"running": "green", "syncing": "yellow", "starting": "cyan", "stopped": "dim"}


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def fmt_float(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if pct else f"{value:.4f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _progress_figures(snap: Snapshot) -> str:
    if snap.job is None:
        return "waiting for the job"
    rate = compute_rate(snap)
    units = f"  units {snap.job.units_accepted}/{snap.job.units}" if snap.job.stages and snap.job.units else ""
    return (
        f"step {snap.job.step}/{snap.job.steps}{units}  {_rate(rate)}  ETA {fmt_seconds(compute_eta(snap))}  "
        f"loss {fmt_float(snap.job.train_loss)}  test acc {fmt_float(snap.job.test_accuracy, pct=True)}"
    )


def _layers(stage: StageStatus) -> str:
    if stage.first_layer == stage.last_layer:
        return f"layer {stage.first_layer}"
    return f"layers {stage.first_layer}–{stage.last_layer}"


def _trainers(stage: StageStatus) -> str:
    return ",".join(f"n{i}" for i in stage.trainers) or "-"


def stages_line(plan: StagePlan | None) -> str:
    """How the job is split, said once when it is loaded ('' for a job without stages)."""
    if plan is None:
        return ""
    parts = ", ".join(f"{_layers(s)} ({s.estimated_mb:.2f} MiB)" for s in plan.stages)
    return f" in {len(plan.stages)} stages: {parts}; the whole model {plan.whole_model_mb:.2f} MiB (estimated)"


def stage_table(job: JobStatus) -> Table:
    table = Table(expand=False)
    for name, justify in (("stage", "right"), ("layers", "left"), ("trainers", "left"), ("memory (est.)", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for st in job.stages:
        table.add_row(str(st.index), _layers(st), _trainers(st), f"{st.estimated_mb:.2f} MiB")
    return table


def _rate(rate: float | None) -> str:
    return "- steps/s" if rate is None else f"{rate:.2f} steps/s"


def node_table(nodes: tuple[NodeStatus, ...]) -> Table:
    table = Table(expand=False)
    for name, justify in (
        ("node", "right"), ("role", "left"), ("state", "left"), ("height", "right"), ("peers", "right"),
        ("trained", "right"), ("verified", "right"), ("rejected", "right"), ("peak MiB", "right"), ("rpc", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for n in nodes:
        style = STATE_STYLES.get(n.state, "red")
        table.add_row(
            str(n.index), n.role, Text(n.state, style=style), _count(n.height), _count(n.peers),
            _count(n.units_trained), _count(n.units_verified), _count(n.units_rejected), _mib(n.peak_rss_mb), n.rpc_url,
        )
    return table


def render_view(snap: Snapshot) -> RenderableType:
    """The live screen: a header, the job's progress bar and figures, the node table, where the logs are."""
    title = snap.job.name if snap.job is not None else "-"
    header = Text.assemble(
        ("TDML devnet", "bold"), f"  {len(snap.nodes)} node(s)  job {title}  ",
        (snap.phase, "bold cyan"), f"  elapsed {snap.elapsed:.1f} s",
    )
    bar = ProgressBar(
        total=float(snap.job.steps) if snap.job is not None else None,
        completed=float(snap.job.step) if snap.job is not None else 0.0,
        width=40,
    )
    progress = Table.grid(padding=(0, 2))
    progress.add_row(bar, Text(_progress_figures(snap)))
    parts: list[RenderableType] = [header, progress, node_table(snap.nodes)]
    if snap.job is not None and snap.job.stages:
        parts.append(stage_table(snap.job))
    if snap.logs is not None:
        parts.append(Text(f"logs: {snap.logs}", style="dim"))
    return Group(*parts)


def progress_line(snap: Snapshot) -> str:
    """The same figures on one line, for output that is not a terminal."""
    nodes = " ".join(
        f"n{n.index}:{n.state.replace(' ', '=')}/h{_count(n.height)}/p{_count(n.peers)}"
        f"/t{_count(n.units_trained)}/v{_count(n.units_verified)}/r{_count(n.units_rejected)}"
        for n in snap.nodes
    )
    stages = ""
    if snap.job is not None and snap.job.stages:
        stages = " | " + " ".join(f"S{st.index}:{_trainers(st)}" for st in snap.job.stages)
    return f"[{snap.elapsed:7.1f}s] {snap.phase}: {_progress_figures(snap)} | {nodes}{stages}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def node_up_line(n: NodeStatus, p2p: str, log: str) -> str:
    """The line printed as a node comes up: where to reach it and what it runs as."""
    return f"node {n.index} up: {n.role}, pid {n.pid}, rpc {n.rpc_url}, p2p {p2p}, log {log}"


def report_table(report: DevnetReport) -> Table:
    snap = report.final
    job = snap.job
    started = snap.job_started or 0.0
    steps = job.step if job is not None else 0
    verified = sum(n.units_verified or 0 for n in snap.nodes)
    rejected = sum(n.units_rejected or 0 for n in snap.nodes)
    rows = [
        ("job", report.job_id),
        ("steps", str(steps)),
        ("blocks", str(report.blocks)),
        ("elapsed", f"{snap.elapsed:.1f} s (nodes up and job submitted at {started:.1f} s, "
                    f"training {snap.elapsed - started:.1f} s)"),
        ("total", f"{report.total:.1f} s (with stopping the nodes and the reference run)"),
        ("rate", _rate(compute_rate(snap))),
        ("final train loss", fmt_float(job.train_loss if job else None)),
        ("test accuracy", fmt_float(job.test_accuracy if job else None, pct=True)),
        ("units verified / rejected", f"{verified} / {rejected}"),
        *((("data", f"private: sealed, its key sealed to {report.sealed_to} nodes"),) if report.sealed_to is not None else ()),
        *(
            (f"stage {st.index}", f"{_layers(st)}, trained by {_trainers(st)}, {st.estimated_mb:.2f} MiB estimated")
            for st in (job.stages if job is not None else ())
        ),
        ("peak memory (RSS)", "  ".join(f"n{n.index} {_mib(n.peak_rss_mb)} MiB" for n in snap.nodes)),
        ("model state root", report.model_root),
        ("reference run", {None: "not run", True: "equal bit for bit", False: "DIFFERS"}[report.matches_reference]),
        ("exported model", str(report.model_path)),
        ("node logs", str(snap.logs)),
        ("node homes", str(report.homes) if report.homes is not None else "removed (pass --keep to keep them)"),
    ]
    table = Table(title="devnet report", show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    return table
