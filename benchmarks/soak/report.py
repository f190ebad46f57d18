"""The soak's markdown page, from its result dictionary. This module must never measure or write files."""

from __future__ import annotations

from typing import Any


def render_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Hostile-client soak",
        "",
        f"{result['when']}, seed {result['seed']}: {len(result['nodes'])} nodes trained {len(result['jobs'])} "
        f"job(s) of `{result['job']}` ({result['steps']} steps each) while {len(result['attacks'])} attacks ran for "
        f"{result['attacks_seconds']:.0f} s against every node's RPC and p2p ports. "
        f"Machine: {result['machine'].get('cpu_count', '?')} cores.",
        "",
        "## Checks",
        "",
        *[f"- {'pass' if ok else 'FAIL'}: {name}" for name, ok in result["checks"].items()],
        "",
        "## Jobs",
        "",
        "| # | seconds | equals reference |",
        "|---|---|---|",
        *[f"| {i + 1} | {j['seconds']} | {'yes' if j['matches_reference'] else 'NO'} |" for i, j in enumerate(result["jobs"])],
        "",
        "## Nodes",
        "",
        "| node | RSS start MB | RSS max MB | RSS end MB | fds start | fds max | fds after settling | log growth MB |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {n['node']} | {n['rss_start_mb']} | {n['rss_max_mb']} | {n['rss_end_mb']} | {n['fds_start']} | "
          f"{n['fds_max']} | {n['fds_end']} | {n['log_growth_mb']} |" for n in result["nodes"]],
        "",
        f"`/health`: {result['health']['answered']} answers, {result['health']['missed']} missed, longest gap "
        f"{result['health']['longest_gap_s']} s. Fewest peers any node had: {result['peers_min']}.",
        "",
        "## Attacks",
        "",
        "| attack | attempts | refused or cut | longest held s | answers |",
        "|---|---|---|---|---|",
        *[f"| {name} | {a['attempts']} | {a['refused']} | {a['held_seconds_max']} | "
          f"{', '.join(f'{k}: {v}' for k, v in sorted(a['answers'].items())) or '—'} |"
          for name, a in result["attacks"].items()],
        "",
        f"Bounds: memory {result['bounds']['memory_mb']:.0f} MB per node, log growth {result['bounds']['log_growth_mb']:.0f} MB "
        f"per node, descriptors within {result['bounds']['fd_slack']} of the start after "
        f"{result['bounds']['settle_seconds']:.0f} s of settling.",
        "",
    ]
    return "\n".join(lines)
