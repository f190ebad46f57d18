"""CI share of the sealed-envelope fuzzing: seeded mutation runs and a Hypothesis property.

``open_blob`` and ``open_key`` must raise only ``SealError`` for bad bytes,
and nothing but the sealed plaintext (or key) may ever come out of them.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdml_node.work import sealed

from . import target_sealed
from .run import run_sealed

SEED = int(os.environ.get("TDML_FUZZ_SEED", "20240611"))
CORPUS = target_sealed.build_corpus(SEED)


def test_seeded_mutation_share_finds_no_failure() -> None:
    result = run_sealed(SEED, 0, 5000)
    assert result.failure_count == 0, "\n\n".join(f.describe() for f in result.failures)
    assert result.inputs == 5000
    assert result.outcomes["rejected"] > 3000 and result.outcomes["opened"] > 0  # both sides reached


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_open_to_nothing_or_raise_seal_error(data: bytes) -> None:
    for blob in (data, sealed.MAGIC + data):
        try:
            assert sealed.open_blob(blob, CORPUS.key) in {p for _, p in CORPUS.envelopes}
        except sealed.SealError:
            pass
    try:
        assert sealed.open_key(data, CORPUS.keypair.signing_key) == CORPUS.key
    except sealed.SealError:
        pass
