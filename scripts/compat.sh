#!/usr/bin/env bash
# Run the cross-version smoke suite (tests/compat) on every other Airflow line and Python we declare.
#
#   scripts/compat.sh [LINE|all] [pytest args...]   # default: all
#   scripts/compat.sh lock [LINE|all]               # re-resolve the pinned environments
#   scripts/compat.sh prepare [LINE|all]            # only build the environments
#   scripts/compat.sh pythons                       # the Python versions CI runs, one a line
#
# A LINE (LINES below) is an Airflow line, run on Python 3.11 like the main suite (2.11, 3.0, 3.1,
# 3.2), or an Airflow line with the Python it runs on (3.3-py3.12: Airflow 3.3 on Python 3.12).
# The locked Airflow 3.3.x runs the whole suite, tests/compat included, in the repo's .venv on
# Python 3.11 (scripts/test.sh); its 3.3-py3.X lines here pin the same Airflow, read from uv.lock.
# Each line gets its own environment, made with uv under
# ${TFY_COMPAT_DIR:-~/.cache/tfy-compat}/airflow-<line> and reused by later runs, never the
# repo's .venv. It holds exactly tests/compat/requirements-airflow-<line>.txt (that Airflow, the
# provider's other dependencies, pytest), resolved for and installed into the line's Python, plus
# the provider's wheel installed alone (--no-deps), so the installed package, not the source tree,
# is what gets tested. The wheel is the one `uv build` makes from this checkout (sdist first, the
# wheel built from the sdist), or the one named by TFY_COMPAT_WHEEL (scripts/release_check.sh
# passes the wheel it checked). Then tests/compat runs with that environment's pytest;
# tests/conftest.py gives the run a throwaway AIRFLOW_HOME and migrates its SQLite DB with that
# version's `airflow db migrate`.
#
# A line's Python is pythonX.Y on PATH when it runs (a pyenv shim exists for every installed
# version but runs only the selected ones), else pyenv's ${PYENV_ROOT:-~/.pyenv}/versions/X.Y.*;
# none is ever downloaded, and a missing one fails the line with a message saying so.
#
# The lines run in parallel (TFY_COMPAT_JOBS at a time, default all of them): installs are
# network-bound, tests often wait on subprocesses and pokes, and a line needs under 1 GiB. Each
# line's output goes to its log, printed once it ends.
#
# The requirements files are resolutions from PyPI (Airflow's constraints files are not on PyPI)
# and are committed, so CI installs the same set every time. `lock` re-resolves them; a run
# re-resolves on its own when the inputs below or pyproject's dependencies changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
export UV_PYTHON_DOWNLOADS=never

# The newest release of each Airflow line we support; bump together with `scripts/compat.sh lock`.
declare -A AIRFLOW_PIN=([2.11]=2.11.2 [3.0]=3.0.6 [3.1]=3.1.8 [3.2]=3.2.2)
# The line uv.lock pins, which the main suite runs: its release is read from uv.lock, and its lines
# here are resolved within uv.lock's versions (`uv export` as constraints), so they differ from the
# main suite's environment only in the Python and what that Python needs of its own. uv.lock is
# one of their inputs: after changing it, re-lock them (`scripts/compat.sh lock <line>`) and commit.
LOCKED_LINE=3.3
# The Python the main suite (.venv) and every line without a -pyX.Y suffix run on.
DEFAULT_PYTHON=3.11
# Every line this script runs: <airflow line> on DEFAULT_PYTHON, or <airflow line>-py<X.Y>.
LINES=(2.11 3.0 3.1 3.2 3.3-py3.12 3.3-py3.13)
# Airflow lines resolved as of their release (uv --exclude-newer, about a week after it), as a
# user who installed them then got them: a plain resolution today pulls dependencies far newer
# than these releases (fastapi 0.16x, pydantic), and their task runner then dies at start with a
# pydantic "needs a discriminator field" error in TITerminalStatePayload, before any provider
# code runs.
declare -A RESOLVE_AS_OF=([3.0]=2025-09-05 [3.2]=2026-06-05)
# Let through newer than RESOLVE_AS_OF: what the provider itself needs newer than those releases.
NEWER_ALLOWED=(apache-airflow-providers-common-compat)
# What the suite needs besides Airflow and the provider's own dependencies.
TEST_REQUIREMENTS=("pytest>=8" "pytest-timeout>=2.3")

COMPAT_DIR="${TFY_COMPAT_DIR:-$HOME/.cache/tfy-compat}"

ensure_uv() {
  if ! command -v uv >/dev/null 2>&1; then
    echo "uv not found: installing it from PyPI with pip" >&2
    python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
  fi
}
PYTHON="$(command -v "python$DEFAULT_PYTHON" || command -v python3)"

AIRFLOW_PIN[$LOCKED_LINE]="$("$PYTHON" -c '
import tomllib
lock = tomllib.load(open("uv.lock", "rb"))
print(next(p["version"] for p in lock["package"] if p["name"] == "apache-airflow"))
')"

log() { printf '[compat %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A line's parts: its Airflow line and its Python version.
airflow_line() { echo "${1%%-py*}"; }
python_version() {
  case "$1" in
    *-py*) echo "${1##*-py}" ;;
    *) echo "$DEFAULT_PYTHON" ;;
  esac
}
describe() { echo "Airflow ${AIRFLOW_PIN[$(airflow_line "$1")]} on Python $(python_version "$1")"; }
known_line() {
  local line
  for line in "${LINES[@]}"; do [ "$line" = "$1" ] && return 0; done
  echo "unknown line $1; use one of: ${LINES[*]} all" >&2
  return 1
}

# The interpreter of Python X.Y (its real path, not a shim), or a clear failure.
find_python() {
  local want="$1" pyenv="${PYENV_ROOT:-$HOME/.pyenv}" candidate found
  for candidate in "$(command -v "python$want" || true)" "$pyenv/versions/$want".*/bin/"python$want"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if found="$("$candidate" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", sys.executable)' 2>/dev/null)" &&
      [ "${found%% *}" = "$want" ]; then
      echo "${found#* }"
      return 0
    fi
  done
  echo "Python $want not found: no working python$want on PATH and none under $pyenv/versions/$want.*;" \
    "install it (uv never downloads one here: UV_PYTHON_DOWNLOADS=never)" >&2
  return 1
}
line_python() {
  local want
  want="$(python_version "$1")"
  if [ "$want" = "$DEFAULT_PYTHON" ]; then echo "$PYTHON"; else find_python "$want"; fi
}

# The top-level requirements of one line's environment: the Airflow pin, the provider's
# dependencies from pyproject.toml except its apache-airflow bound, and the test tools.
requirements_in() {
  local ver="$1"
  echo "apache-airflow==${AIRFLOW_PIN[$(airflow_line "$ver")]}"
  "$PYTHON" - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    if re.split(r"[\s<>=!~;\[(]", dep, maxsplit=1)[0].lower() != "apache-airflow":
        print(dep)
EOF
  printf '%s\n' "${TEST_REQUIREMENTS[@]}"
}

# uv's resolution options for one line (none for a plain resolution).
resolve_options() {
  local as_of pkg
  as_of="${RESOLVE_AS_OF[$(airflow_line "$1")]:-}"
  [ -n "$as_of" ] || return 0
  printf '%s\n' --exclude-newer "$as_of"
  for pkg in "${NEWER_ALLOWED[@]}"; do
    printf '%s\n' --exclude-newer-package "$pkg=false"
  done
}

# uv.lock's versions, as constraints, for a line of LOCKED_LINE (nothing for the others).
lock_constraints() {
  [ "$(airflow_line "$1")" = "$LOCKED_LINE" ] || return 0
  uv export --frozen --quiet --no-hashes --no-header --no-annotate --all-groups --all-extras --no-emit-project
}

lock_file() { echo "tests/compat/requirements-airflow-$1.txt"; }
input_hash() { { requirements_in "$1"; resolve_options "$1"; lock_constraints "$1"; } | sha256sum | cut -c1-16; }

lock() {
  local ver="$1" file hash options python constraints
  file="$(lock_file "$ver")"
  hash="$(input_hash "$ver")"
  python="$(line_python "$ver")"
  mapfile -t options < <(resolve_options "$ver")
  lock_constraints "$ver" >"$file.constraints.tmp"
  if [ -s "$file.constraints.tmp" ]; then
    options+=(--constraints "$file.constraints.tmp")
    constraints=" within uv.lock's versions"
  else
    constraints=""
  fi
  log "resolving $(describe "$ver") -> $file"
  {
    echo "# The Airflow $(airflow_line "$ver") smoke-suite environment (tests/compat) on Python $(python_version "$ver")."
    echo "# Generated by scripts/compat.sh lock: resolved from PyPI for that Python$constraints,"
    if [ -n "${RESOLVE_AS_OF[$(airflow_line "$ver")]:-}" ]; then
      echo "# as of the release (uv pip compile $(resolve_options "$ver" | paste -sd' ')),"
    fi
    echo "# with no Airflow constraints file, of these inputs:"
    requirements_in "$ver" | sed 's/^/#   /'
    echo "# inputs-sha256: $hash"
    requirements_in "$ver" |
      uv pip compile - --python "$python" --no-header --no-annotate --quiet ${options[@]+"${options[@]}"}
  } >"$file.tmp"
  rm -f "$file.constraints.tmp"
  mv "$file.tmp" "$file"
}

ensure_lock() {
  local ver="$1" file
  file="$(lock_file "$ver")"
  if [ ! -f "$file" ] || ! grep -qx "# inputs-sha256: $(input_hash "$ver")" "$file"; then
    log "$file is missing or its inputs changed: re-resolving (commit the result)"
    lock "$ver"
  fi
}

WHEEL=""
build_wheel() {
  if [ -n "${TFY_COMPAT_WHEEL:-}" ]; then
    WHEEL="$(realpath "$TFY_COMPAT_WHEEL")"
    [ -f "$WHEEL" ] || { echo "TFY_COMPAT_WHEEL=$TFY_COMPAT_WHEEL: no such file" >&2; exit 2; }
    log "testing the given wheel $WHEEL"
    return
  fi
  local out="$RUN_DIR/dist"
  mkdir -p "$out"
  log "building the provider's sdist and wheel"
  uv build --quiet --python "$PYTHON" --out-dir "$out" "$ROOT"
  WHEEL="$(ls "$out"/airflow_provider_tfy-*.whl)"
}

sync_env() {
  local ver="$1" venv="$COMPAT_DIR/airflow-$1" python want
  python="$(line_python "$ver")"
  want="$(python_version "$ver")"
  # An environment left on another Python (DEFAULT_PYTHON changed) is made again.
  if [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$want" ]; then
    log "$venv is not on Python $want: removing it"
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $python"
    uv venv --quiet --python "$python" "$venv"
  fi
  log "syncing $venv with $(lock_file "$ver")"
  uv pip sync --quiet --python "$venv/bin/python" "$(lock_file "$ver")"
  uv pip check --quiet --python "$venv/bin/python"
}

setup_env() {
  local ver="$1" venv="$COMPAT_DIR/airflow-$1"
  sync_env "$ver"
  # --no-deps: the dependencies come from the requirements file; the provider's own declared
  # Airflow range is checked by tests/compat/test_compat_packaging.py instead.
  uv pip install --quiet --no-deps --python "$venv/bin/python" "$WHEEL"
}

run_suite() {
  local ver="$1" venv="$COMPAT_DIR/airflow-$1" home
  shift
  home="$(mktemp -d "${TMPDIR:-/tmp}/tfy-compat-$ver-XXXXXX")"
  log "running tests/compat on $(describe "$ver")"
  local rc=0
  (
    unset PYTHONPATH
    export AIRFLOW_HOME="$home" TFY_COMPAT_EXPECT_WHEEL=1
    "$venv/bin/pytest" tests/compat -p no:cacheprovider --rootdir "$ROOT" "$@"
  ) || rc=$?
  rm -rf "$home"
  return $rc
}

# One line from its requirements file to its test result; the output goes to the caller's log.
run_line() {
  local ver="$1" t=$SECONDS
  shift
  ensure_lock "$ver"
  setup_env "$ver"
  log "$(describe "$ver"): environment ready in $((SECONDS - t)) s"
  t=$SECONDS
  if run_suite "$ver" "$@"; then
    log "$(describe "$ver"): passed in $((SECONDS - t)) s"
  else
    log "$(describe "$ver"): FAILED after $((SECONDS - t)) s"
    return 1
  fi
}

main() {
  local target="${1:-all}"
  if [ "$target" = pythons ]; then
    # What CI proves, for pyproject's classifiers (scripts/check_dist.py compares them).
    local ver
    { echo "$DEFAULT_PYTHON"; for ver in "${LINES[@]}"; do python_version "$ver"; done; } | sort -uV
    return
  fi
  ensure_uv
  if [ "$target" = prepare ]; then
    # Network-bound: scripts/test.sh runs this in the background while the main suite runs.
    local which="${2:-all}" ver
    [ "$which" = all ] && set -- "${LINES[@]}" || set -- "$which"
    mkdir -p "$COMPAT_DIR"
    for ver in "$@"; do
      known_line "$ver" || exit 2
      ensure_lock "$ver"
      sync_env "$ver"
    done
    return
  fi
  if [ "$target" = lock ]; then
    local which="${2:-all}" ver
    [ "$which" = all ] && set -- "${LINES[@]}" || set -- "$which"
    for ver in "$@"; do
      known_line "$ver" || exit 2
      lock "$ver"
    done
    return
  fi
  [ $# -gt 0 ] && shift
  local selected=()
  if [ "$target" = all ]; then
    selected=("${LINES[@]}")
  elif known_line "$target" 2>/dev/null; then
    selected=("$target")
  else
    echo "usage: scripts/compat.sh [LINE|all] [pytest args...] | {lock|prepare} [LINE|all] | pythons" >&2
    echo "LINE: one of ${LINES[*]}" >&2
    exit 2
  fi

  local start=$SECONDS ver failed=() jobs="${TFY_COMPAT_JOBS:-${#selected[@]}}"
  local -A pid_of=()
  mkdir -p "$COMPAT_DIR"
  # This run's wheel and logs, apart from any other run's; the logs are printed below.
  RUN_DIR="$(mktemp -d "$COMPAT_DIR/run-XXXXXX")"
  trap 'rm -rf "$RUN_DIR"' EXIT
  local logs="$RUN_DIR/logs"
  mkdir -p "$logs"
  build_wheel
  for ver in "${selected[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    log "starting $(describe "$ver") (log: $logs/airflow-$ver.log)"
    run_line "$ver" "$@" >"$logs/airflow-$ver.log" 2>&1 &
    pid_of[$ver]=$!
  done
  for ver in "${selected[@]}"; do
    local rc=0
    wait "${pid_of[$ver]}" || rc=$?
    echo "======== $(describe "$ver") (tests/compat) ========" >&2
    cat "$logs/airflow-$ver.log" >&2
    [ "$rc" = 0 ] || failed+=("$ver")
  done
  log "done in $((SECONDS - start)) s"
  if [ ${#failed[@]} -gt 0 ]; then
    log "failed on: ${failed[*]}"
    exit 1
  fi
}

main "$@"
