"""Side-by-side measurements of the node against plain baselines (``make bench``).

Each ``bench_*`` module measures one part of the project and its baseline in
the same run, several times, and returns the figures; ``run_all`` runs them,
writes ``results/single_node.json`` and ``results/single_node.md`` and prints
the table.

This package must never be imported by the tests or by the node, never assert
on a timing, and never change a project file: it only reads the project and
writes under ``benchmarks/results/`` and temporary directories.
"""
