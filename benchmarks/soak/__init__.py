"""The hostile-client soak: a devnet job under every attack of ``attacks``; run it with ``python -m benchmarks.soak``."""
