"""MkDocs hook: publish the repository's CHANGELOG.md as the site's changelog.md page.

The changelog lives in the repository root, where PyPI and GitHub readers look for it; copying it
into docs/ would make two copies that drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"


def on_files(files: Files, config: Any) -> Files:
    """Add CHANGELOG.md as ``changelog.md``; a missing changelog fails the build."""
    if not CHANGELOG.is_file():
        raise PluginError(f"{CHANGELOG} is missing; the docs link to it as changelog.md")
    text = CHANGELOG.read_text(encoding="utf-8")
    # Links written for readers of the repository (docs/x.md) point at the site's own pages.
    text = re.sub(r"\]\(docs/", "](", text)
    files.append(File.generated(config, "changelog.md", content=text))
    return files
