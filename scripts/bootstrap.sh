# Sourced by demo.sh and test.sh: make sure uv exists, then build .venv from uv.lock.
# Uses the machine's Python 3.11; uv must never try to download a Python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1; then
  echo "uv not found: installing it from PyPI with pip" >&2
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
PYTHON="$(command -v python3.11 || command -v python3)"
uv sync --locked --python "$PYTHON" --quiet
