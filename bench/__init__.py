"""Benchmarks of the escalation engine: `python -m bench` runs them all (bench/README.md)."""
