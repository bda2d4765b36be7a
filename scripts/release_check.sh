#!/usr/bin/env bash
# Build the release artifacts and check them as a user and PyPI would get them.
#
#   scripts/release_check.sh [DIST_DIR]    # default: dist/ (ignored by git)
#
# 1. `uv build`: the sdist first, then the wheel built from the sdist, so a file the sdist
#    forgets breaks the wheel here rather than on a user's machine.
# 2. `twine check --strict` on both (PyPI's metadata and README rendering rules).
# 3. scripts/check_dist.py: one version everywhere, py.typed and the license in the wheel, nothing
#    local in either, classifiers naming only the Python CI runs on.
# 4. The sdist builds and installs alone into a bare environment (no Airflow, no dependencies):
#    the installed package reports the version and provider info Airflow will read.
# The wheel in DIST_DIR is then what scripts/compat.sh installs beside each tested Airflow
# (scripts/test.sh passes it as TFY_COMPAT_WHEEL).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export UV_PYTHON_DOWNLOADS=never
PYTHON="$(command -v python3.11 || command -v python3)"
DIST="${1:-dist}"
start=$SECONDS

rm -rf "$DIST"
uv build --quiet --python "$PYTHON" --out-dir "$DIST" .
sdist="$(echo "$DIST"/airflow_provider_tfy-*.tar.gz)"
wheel="$(echo "$DIST"/airflow_provider_tfy-*-py3-none-any.whl)"
[ -f "$sdist" ] && [ -f "$wheel" ] || { echo "uv build made no sdist or wheel in $DIST" >&2; exit 1; }

.venv/bin/twine check --strict "$sdist" "$wheel"
.venv/bin/python scripts/check_dist.py "$DIST"

bare="$(mktemp -d "${TMPDIR:-/tmp}/tfy-release-XXXXXX")"
trap 'rm -rf "$bare"' EXIT
uv venv --quiet --python "$PYTHON" "$bare/venv"
# Builds the sdist with its declared build backend, fetched from PyPI in an isolated build.
uv pip install --quiet --no-deps --python "$bare/venv/bin/python" "$sdist"
(
  cd "$bare"
  unset PYTHONPATH
  venv/bin/python - <<'EOF'
import importlib.metadata, importlib.resources

import airflow_provider_tfy

version = importlib.metadata.version("airflow-provider-tfy")
info = airflow_provider_tfy.get_provider_info()  # needs no Airflow: Airflow calls it to discover us
assert airflow_provider_tfy.__version__ == version, (airflow_provider_tfy.__version__, version)
assert info["versions"][0] == version and version not in info["versions"][1:], info["versions"]
assert importlib.resources.files("airflow_provider_tfy").joinpath("py.typed").is_file(), "no py.typed"
assert "site-packages" in airflow_provider_tfy.__file__, airflow_provider_tfy.__file__
print(f"release check: the sdist builds and installs alone: {info['package-name']} {version}")
EOF
)
echo "release check: passed in $((SECONDS - start)) s"
