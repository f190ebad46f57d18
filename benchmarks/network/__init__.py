"""Network benchmarks: a 4-node devnet against torch.distributed and a plain loop, consensus, sync.

``python -m benchmarks.network [--quick] [--repeats N] [--out DIR]`` writes
``benchmarks/results/network.json`` and ``network.md`` (``--quick`` writes
``network-quick.json`` / ``.md``, so a smoke run never overwrites real
figures) and prints the markdown table. A full run keeps the raw figures of
the full run it replaces (``previous_run``) and adds a table of both runs'
repeats together, so the headline figures come from two full runs.

Every repeat measures, in this order and in one run, on the compute-heavy job
``heavy`` (``benchmarks.heavy_job``; one unit is well over 0.5 s of CPU on one
thread):

- the plain PyTorch loop in one process, the whole global batch per step;
- torch.distributed DDP with the gloo backend on 4 processes (rank ``r``
  takes shard ``r`` of each step, so each rank holds ``global_batch / 4``
  samples), evaluation on rank 0;
- the job on a fresh 4-node devnet (real node processes): submission to the
  last step's outcome, the moment each evaluation is first seen over RPC, the
  CPU time of every node process (``/proc``) and of its threads, and each
  node's record (units trained, verdicts signed);
- the executor in this process: ``train_unit``, ``check_unit`` (as a designated
  checker runs it) and ``step_outcome`` CPU time, the costs the node CPU time is
  compared with;
- consensus time per empty height on fresh 4- and 7-validator devnets that
  propose as soon as they can (``block_interval_ms = 0``);
- sync speed: a 4-node devnet builds a few hundred blocks (empty ones and the
  blocks of a ``digits-mlp`` job), two of its validators are stopped so the
  chain halts at a fixed height, and a fresh fifth node joins through node 0
  and catches up.

Once per run: the single-process reference run of the job (``run_reference``),
to say whether the devnet's final model equals it bit for bit. The machine's
load average is recorded before and after every measurement.

One module per part; each measurement is one function that takes the run's
``Plan`` and returns its figures as a frozen dataclass:

- ``plan``: ``Plan`` (every size of a run, fixed from the settings), the load log;
- ``table``: ``Figure`` and ``Table``, how a section's rows are filled from figures;
- ``baselines``: the reference run, the plain loop, DDP-gloo ×4;
- ``devnet_tools``: what driving a devnet of real node processes needs;
- ``devnet_job``: the job on a 4-node devnet;
- ``unit_costs``: the executor's costs in this process;
- ``job_sections``: the devnet_vs_baselines, cpu_overhead and verification sections;
- ``empty_heights``: consensus time per empty height, and its section;
- ``sync``: a joining node's sync speed, and its section;
- ``runner``: ``run(settings)``, the order of the measurements;
- ``report`` and ``__main__``: the markdown, the previous run, the command line.

This package must never assert on a timing, leave a process running, or
write outside ``benchmarks/results/`` (or ``--out``) and temporary directories.
"""
