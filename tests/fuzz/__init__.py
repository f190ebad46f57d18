"""Bad-input fuzzing of the codec, the p2p session layer and the JSON-RPC server.

The package holds the generators (structure-aware mutation of valid
encodings), the three targets with the properties they check, the long-run
command ``python -m tests.fuzz.run`` and the CI share (``test_fuzz_*.py``).
Every generated input is a function of ``(seed, target, index)`` only, so a
failure is reproduced with ``python -m tests.fuzz.run --replay TARGET:INDEX
--seed S``.
"""
