"""The docs' pictures: where the browser tests save them, and the checks every picture passes.

The tests that take the pictures run in every test run, saving under ``artifacts/docs-images/``
(git-ignored), so CI proves they can be taken and checks them, without touching the committed
ones. ``bash scripts/screenshots.sh`` sets ``TFY_DOCS_IMAGES`` to ``docs/images`` to replace the
committed pictures.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO_ROOT / "artifacts" / "docs-images"
CHROMIUM = Path("/usr/bin/chromium")
# Headless as root without a sandbox; no background calls to outside hosts (see tests/ui).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Sharp on high-density screens, small enough for a README.
SCALE = 2
MAX_BYTES = 600_000


def pictures_dir() -> Path:
    """Where pictures go this run: ``$TFY_DOCS_IMAGES``, else ``artifacts/docs-images``."""
    folder = Path(os.environ.get("TFY_DOCS_IMAGES") or DEFAULT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def take_picture(
    page: Page,
    name: str,
    secret: str,
    *,
    element: Locator | None = None,
    clip: dict[str, float] | None = None,
) -> Path:
    """Screenshot ``page`` as ``<name>.png``, cropped to ``element`` or ``clip``; check it first.

    Checks: the key is nowhere in the page's text or in any input's value other than a password
    box (which a screenshot shows as dots), and the picture has a sane size.
    """
    body_text = page.locator("body").inner_text()
    assert secret not in body_text, f"{name}: the API key is visible on the page"
    visible_values = page.eval_on_selector_all(
        "input:not([type=password]), textarea", "els => els.map(e => e.value)"
    )
    assert not any(secret in value for value in visible_values), f"{name}: the API key is in a visible field"
    path = pictures_dir() / f"{name}.png"
    if element is not None:
        element.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), clip=clip)
    width, height = png_size(path)
    assert 300 <= width <= 1600 * SCALE, f"{name}: {width} px wide"
    assert 150 <= height <= 1400 * SCALE, f"{name}: {height} px high"
    assert path.stat().st_size <= MAX_BYTES, f"{name}: {path.stat().st_size} bytes"
    return path


def around(*boxes: dict[str, float] | None, margin: float = 12) -> dict[str, float]:
    """The smallest clip holding every bounding box (``locator.bounding_box()``), plus a margin."""
    assert all(boxes), "an element to photograph is not on the page"
    found = [box for box in boxes if box]
    left = max(0.0, min(b["x"] for b in found) - margin)
    top = max(0.0, min(b["y"] for b in found) - margin)
    right = max(b["x"] + b["width"] for b in found) + margin
    bottom = max(b["y"] + b["height"] for b in found) + margin
    return {"x": left, "y": top, "width": right - left, "height": bottom - top}


@contextlib.contextmanager
def chromium_page(profile: Path, width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A page in Debian's Chromium (never downloaded), at ``SCALE`` device pixels per CSS pixel."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium package"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            device_scale_factor=SCALE,
            color_scheme="light",
        )
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()
