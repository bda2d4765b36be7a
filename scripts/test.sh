#!/usr/bin/env bash
# Set up and run every check: ruff (lint + format), mypy on the package, the whole test suite on
# the locked Airflow 3.3, the release artifacts, then the smoke suite on Airflow 2.11, 3.0, 3.1
# and 3.2, and on Airflow 3.3 under Python 3.12 and 3.13 (scripts/compat.sh's lines, each in its
# own uv env, with the wheel the release check built).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# The browser test drives Debian's Chromium; it is never downloaded by Playwright.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the browser test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The system tests start a private PostgreSQL cluster from Debian's server binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's postgresql for the system tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# The system tests' Celery workers use a private Redis server (Debian's) as their broker.
if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's redis-server for the system tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
# The other Airflow lines' environments download (network-bound) while the main suite runs.
compat_log="$(mktemp)"
bash scripts/compat.sh prepare all >"$compat_log" 2>&1 &
compat_prepare=$!
trap 'kill "$compat_prepare" 2>/dev/null || true; rm -f "$compat_log"' EXIT
set -x
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy airflow_provider_tfy
# The docs site, strictly: a broken link, anchor or missing page fails (built outside the repo).
site_dir="$(mktemp -d)"
.venv/bin/mkdocs build --strict --quiet --site-dir "$site_dir"
rm -rf "$site_dir"
# Two workers: much of the suite waits on subprocesses, pokes and sleeps. The system suite and
# the browser tests each stay on one worker (tests/conftest.py schedules them).
.venv/bin/pytest -n 2 "$@"
bash scripts/release_check.sh dist
if ! wait "$compat_prepare"; then
  cat "$compat_log" >&2
  echo "building the other Airflow lines' environments failed (log above)" >&2
  exit 1
fi
TFY_COMPAT_WHEEL="$(echo dist/airflow_provider_tfy-*.whl)" bash scripts/compat.sh all
