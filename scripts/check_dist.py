"""Check the release artifacts that ``uv build`` made: what they contain and what they declare.

    python scripts/check_dist.py DIST_DIR

Run by ``scripts/release_check.sh`` after ``twine check --strict``. One version everywhere
(pyproject, ``__version__``, the changelog's newest entry, both artifacts' metadata; the installed
package's provider info is checked by release_check.sh); ``py.typed``, the license and the entry
points in the wheel, and nothing but the package; Python classifiers naming exactly the Pythons CI
runs on (``scripts/compat.sh pythons``). Reads the source tree and the archives, imports nothing
of the provider's.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_tfy"
ENTRY_POINTS = {
    "apache_airflow_provider": "provider_info = airflow_provider_tfy:get_provider_info",
    "airflow.plugins": "truefoundry = airflow_provider_tfy.plugins:TrueFoundryPlugin",
    "pytest11": "truefoundry = airflow_provider_tfy.testing.pytest_plugin",
}
# Files the source distribution must carry to build the wheel and run the tests.
SDIST_FILES = ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", f"{PACKAGE}/py.typed", "PKG-INFO")

# Files and folders of a working tree that have no place in a release.
LOCAL_ONLY = {".hypothesis", "artifacts", ".venv", "dist", ".ci", "benchmarks"}
REQUIRED_CLASSIFIERS = (
    "Framework :: Apache Airflow",
    "Framework :: Apache Airflow :: Provider",
    "Typing :: Typed",
)

problems: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def source_versions() -> dict[str, str]:
    """The version as each place in the source tree states it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    init = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    (dunder,) = [
        node.value.value
        for node in init.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    ]
    changelog = re.search(r"^## (\d+\.\d+\.\d+\S*)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    return {
        "pyproject.toml": pyproject["version"],
        f"{PACKAGE}.__version__": dunder,
        "CHANGELOG.md (newest entry)": changelog.group(1) if changelog else "(none)",
    }


def metadata(text: str) -> dict[str, list[str]]:
    message = Parser().parsestr(text)
    return {key: message.get_all(key) or [] for key in set(message.keys())}


def check_wheel(path: Path, version: str) -> None:
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        dist_info = f"{PACKAGE}-{version}.dist-info"
        meta = metadata(wheel.read(f"{dist_info}/METADATA").decode())
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    outside = sorted({n.split("/")[0] for n in names} - {PACKAGE, dist_info})
    check(not outside, f"wheel: files outside the package: {outside}")
    check(f"{PACKAGE}/py.typed" in names, "wheel: no py.typed (the package is typed: mypy runs on it)")
    check(f"{dist_info}/licenses/LICENSE" in names, "wheel: no LICENSE")
    check(not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], "wheel: compiled files")
    check(meta.get("Version") == [version], f"wheel: Version {meta.get('Version')} != {version}")
    check(meta.get("License-Expression") == ["Apache-2.0"], "wheel: License-Expression is not Apache-2.0")
    for group, line in ENTRY_POINTS.items():
        check(f"[{group}]\n{line}" in entry_points, f"wheel: entry point [{group}] {line} missing")
    check_classifiers(meta.get("Classifier", []))


def ci_pythons() -> set[str]:
    """The Pythons CI runs on: the main suite's and each smoke-suite line's, as compat.sh declares them."""
    listing = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compat.sh"), "pythons"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return set(listing.stdout.split())


def check_classifiers(classifiers: list[str]) -> None:
    ci = ci_pythons()
    this_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    check(this_python in ci, f"the release check runs on Python {this_python}, which compat.sh does not list")
    python_minor = re.compile(r"Programming Language :: Python :: (3\.\d+)")
    pythons = {m.group(1) for c in classifiers if (m := python_minor.fullmatch(c))}
    check(pythons == ci, f"classifiers name Python {sorted(pythons)}; CI runs {sorted(ci)}")
    for needed in REQUIRED_CLASSIFIERS:
        check(needed in classifiers, f"classifier {needed!r} missing")
    check(
        not [c for c in classifiers if c.startswith("License ::")],
        "a License classifier beside License-Expression (PEP 639 forbids both)",
    )


def check_sdist(path: Path, version: str) -> None:
    top = f"{PACKAGE}-{version}"
    with tarfile.open(path) as sdist:
        names = {name.removeprefix(top + "/") for name in sdist.getnames()}
        member = sdist.extractfile(f"{top}/PKG-INFO")
        assert member is not None
        meta = metadata(member.read().decode())
    for needed in SDIST_FILES:
        check(needed in names, f"sdist: {needed} missing")
    local = sorted(n for n in names if n.split("/")[0] in LOCAL_ONLY)
    check(not local, f"sdist: local files: {local[:5]}")
    check(meta.get("Version") == [version], f"sdist: Version {meta.get('Version')} != {version}")


def main() -> int:
    dist = Path(sys.argv[1])
    versions = source_versions()
    version = versions["pyproject.toml"]
    for where, stated in versions.items():
        check(stated == version, f"{where} says {stated}, pyproject.toml says {version}")
    (wheel,) = dist.glob(f"{PACKAGE}-{version}-py3-none-any.whl")
    (sdist,) = dist.glob(f"{PACKAGE}-{version}.tar.gz")
    check_wheel(wheel, version)
    check_sdist(sdist, version)
    for problem in problems:
        print(f"release check: {problem}", file=sys.stderr)
    if not problems:
        print(f"release check: {wheel.name} and {sdist.name} are consistent (version {version})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
