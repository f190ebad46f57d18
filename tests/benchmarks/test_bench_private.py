"""The private-job benchmark's envelope and key-share part measures what it says, on small blobs and no devnet.

No timing is asserted: only that every figure is a positive finite number,
that every envelope opened to its input and every share to its key, and that
the rows and facts the markdown reads are there.
"""

from __future__ import annotations

import math
import os

from benchmarks import bench_private
from benchmarks.common import BenchResult

SIZES = (("1 B", 1), ("3 KiB + 1", 3 * 1024 + 1))
"""Small and odd sizes: the benchmark's own sizes (up to 64 MiB) take too long for a unit test."""


def _positive_finite(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(v) and v > 0 for v in values)


def test_the_envelope_and_key_share_figures_are_positive_and_every_blob_and_share_opens_to_its_input() -> None:
    dataset = os.urandom(64 * 1024)
    inputs = bench_private.crypto_inputs(dataset, SIZES)
    assert [len(d) for _, d in inputs] == [1, 3 * 1024 + 1, 64 * 1024]
    assert inputs[-1][1] == dataset  # the job's own dataset is measured last, as it is

    envelopes = [bench_private.measure_envelope(label, data, 2, min_seconds=0.005) for label, data in inputs]
    shares = [bench_private.measure_shares(n, 2, min_seconds=0.005) for n in (2, 3)]
    for e, (_, data) in zip(envelopes, inputs, strict=True):
        assert e.opened_equal and e.size == len(data) and e.envelope_bytes > e.size
        assert all(_positive_finite(list(v)) for v in (e.seal_seconds, e.open_seconds, e.sha256_seconds))
    for s in shares:
        assert s.opened_equal and _positive_finite(list(s.seal_seconds)) and _positive_finite(list(s.open_seconds))

    res = BenchResult(bench_private.NAME, bench_private.TITLE, 2)
    bench_private.add_crypto_rows(res, envelopes, shares, (0.01, 0.02))
    rows = {r["label"]: r for r in res.to_json()["rows"]}
    for label, _ in inputs:
        for op in ("seal_blob", "open_blob"):
            row = rows[f"{op}, {label}"]
            assert row["unit"] == "MB/s" and len(row["ours"]["runs"]) == 2
            assert _positive_finite(row["ours"]["runs"] + row["baseline"]["runs"] + row["ratio_ours_over_baseline"]["runs"])
    for label in ("seal_key: one data key to 2 members", "seal_key: one data key to 3 members", "open_key: one share"):
        assert _positive_finite(rows[label]["ours"]["runs"])
    assert any(label.startswith("seal_job") for label in rows)
    assert all(text.endswith("True") for text in res.facts["envelopes opened to their input, byte for byte"])
    assert all(text.endswith("True") for text in res.facts["every key share opened to the data key"])

