#!/usr/bin/env bash
# Set up and run the demo: the example DAG against the gateway simulator, in a throwaway Airflow home.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec .venv/bin/python scripts/demo.py
