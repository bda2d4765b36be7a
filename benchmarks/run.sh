#!/usr/bin/env bash
# Set up the environment, then run every benchmark: prints a table, writes JSON
# (default artifacts/benchmarks/results.json). Arguments go to benchmarks/run.py,
# e.g. --smoke, --json PATH, --only density.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/bootstrap.sh"
exec .venv/bin/python -m benchmarks.run "$@"
