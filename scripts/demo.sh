#!/usr/bin/env bash
# Set up and run the demo: the example pipeline (upload, fine-tune once, register) against the gateway simulator.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec .venv/bin/python scripts/demo.py
