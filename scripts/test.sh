#!/usr/bin/env bash
# Set up and run every check: ruff (lint + format), mypy on the package, the whole test suite on
# the locked Airflow 3.3, then the smoke suite on Airflow 2.11 and 3.1 (each in its own uv env).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# The browser test drives Debian's Chromium; it is never downloaded by Playwright.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the browser test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
set -x
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy airflow_provider_tfy
.venv/bin/pytest "$@"
bash scripts/compat.sh all
