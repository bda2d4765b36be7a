"""Benchmarks of the provider's per-poll, per-wait and per-parse costs.

Run them all with ``benchmarks/run.sh`` (or ``python -m benchmarks.run``); see ``run.py``.
"""
