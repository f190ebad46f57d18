"""The network benchmarks' job ``heavy``: units with enough compute that one takes over 0.5 s.

Workload W's units last about a millisecond, so a chain of them measures the
node's per-step overhead and nothing else. ``heavy`` keeps W's shape (an MLP
classifier, SGD with momentum, 4 shards, H = 1, exact verification) and makes
each unit big: 8,192 samples through an MLP 64-768-768-768-10 (1.24 M
parameters, a 5 MB result), about 0.6–0.8 s of CPU on one thread of this
machine, while a unit's blobs stay small beside its compute.

The data are ``synthetic_bundle`` Gaussian clusters (65,536 train / 2,048 test
samples, 64 features, 10 classes, the default spread 0.4; a nearest-centre
rule gets about 92 % of the test set). ``TARGET_ACCURACY`` is what the
single-process reference reaches after 16 of the full run's 20 steps (0.864;
0.835 after 14), so the time to it measures most of the run;
``QUICK_TARGET_ACCURACY`` is reached within the quick run's 4 steps (0.336).

This module must never build a spec that ``consensus.transition.validate_job_spec``
would refuse; it only composes the presets' own builders.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from consensus.types import JobSpec
from tdml_node.work.datasets import synthetic_bundle
from tdml_node.work.jobs import make_job, optimizer_spec
from tdml_node.work.models import make_model_spec

TARGET_ACCURACY = 0.85
QUICK_TARGET_ACCURACY = 0.3


@lru_cache(maxsize=1)
def _data() -> bytes:
    return synthetic_bundle(n_train=65_536, n_test=2_048, features=64, classes=10)


def heavy_job(*, steps: int = 20) -> tuple[JobSpec, bytes]:
    """The ``heavy`` job's spec (with ``steps`` steps) and its dataset bytes."""
    data = _data()
    spec = make_job(
        "heavy",
        dataset=data,
        model=make_model_spec("mlp", in_dim=64, hidden=768, layers=3, classes=10),
        optimizer=optimizer_spec("sgd", lr="0.1", momentum="0.9"),
        global_batch=4 * 8_192,
        shards=4,
        steps=20,
        eval_every=2,
    )
    return dataclasses.replace(spec, steps=steps), data
