"""Detection rate of sampled verification against a trainer that skips an inner step.

With H inner steps per unit and each of m checkers replaying c of them, a
unit whose one faulty step is step s escapes a checker with probability
(H - c) / H, so it escapes all m checkers with probability ((H - c) / H)^m.
This measures it: many units of the ``digits-mlp-local`` job (H = 4) are
trained honestly, then forged by the ``skip-steps`` behaviour of the node, and
checked by m independent checker keys with c sampled steps each, exactly as
validators do (``consensus.work.sample_for`` + ``check_unit``).

Run: ``python -m benchmarks.detection_rates [--units N]``; writes
``benchmarks/results/detection.json`` and ``.md``. Never a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from benchmarks.common import executor_for, job_state, machine_info, now_iso
from consensus.crypto import Keypair
from consensus.types import WorkSubmission
from consensus.work import check_unit, sample_for
from tdml_node.devtools.behaviours import SkippedStep
from tdml_node.work.jobs import get_job

RESULTS = Path(__file__).parent / "results"


def measure(units: int, checked: int, checkers: int) -> dict[str, float]:
    spec, dataset = get_job("digits-mlp-local", steps=units)
    spec = dataclasses.replace(spec, verification=dataclasses.replace(spec.verification, checked_steps=checked))
    executor = executor_for(dataset)
    root = executor.initial_model_root(spec)
    cheat = SkippedStep("skip-steps")
    trainer = Keypair.from_seed(bytes(32))
    keys = [Keypair.from_seed(bytes([i + 1]) * 32) for i in range(checkers)]
    caught = 0
    done = 0
    for step in range(units // spec.shards + 1):
        job = job_state(spec, root, step)
        for shard in range(spec.shards):
            if done >= units:
                break
            unit = cheat.train(executor, job, shard)
            sub = WorkSubmission(
                job.job_id, step, shard, trainer.public_key, root,
                unit.checkpoint_digests, unit.result_digest, unit.losses, unit.receipt,
            )
            hit = False
            for key in keys:
                _, steps = sample_for(key, "bench", job, sub)
                if check_unit(executor, job, sub, steps).failure:
                    hit = True
            caught += hit
            done += 1
    escape = ((spec.inner_steps - checked) / spec.inner_steps) ** checkers
    return {"units": done, "caught": caught, "rate": caught / done, "expected_rate": 1 - escape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=400)
    args = parser.parse_args()
    rows = []
    for checked, checkers in ((1, 1), (1, 2), (2, 2), (4, 1)):
        r = measure(args.units, checked, checkers)
        rows.append({"H": 4, "c": checked, "m": checkers, **r})
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection.json").write_text(json.dumps({"date": now_iso(), "machine": machine_info(), "rows": rows}, indent=2))
    lines = ["| H | c | m | faulty units | caught | measured rate | expected 1 - ((H-c)/H)^m |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['H']} | {r['c']} | {r['m']} | {r['units']} | {r['caught']} | {r['rate']:.3f} | {r['expected_rate']:.3f} |")
    (RESULTS / "detection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
