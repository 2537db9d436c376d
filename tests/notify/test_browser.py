"""The HTML digest in a real browser (headless Chromium) at desktop and phone widths.

Screenshots go to ``$SPENDWATCH_SCREENSHOT_DIR`` when set (to look at them), else to the test's
temporary folder. Skips, saying why, when Chromium is not installed (Debian package ``chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from spendwatch.notify.cli import render_to_dir
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.notify.estate import NOW, copy_store, insert_incident, job_link, load, write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTHS = {"desktop": (1024, 4600), "phone": (390, 8000)}


def screenshot(html: Path, png: Path, width: int, height: int, profile: Path) -> None:
    assert CHROMIUM is not None
    subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}", html.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_digest_renders_in_chromium_at_desktop_and_phone_widths(tmp_path: Path, estate_store: Path) -> None:
    import json

    from PIL import Image

    config = load(write_config(tmp_path))
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    insert_incident(store, jobs=json.dumps([job_link()]))
    [html, _, _] = render_to_dir(config, store, clock, NOW.date(), tmp_path / "digest", charts=True)
    out = Path(os.environ.get("SPENDWATCH_SCREENSHOT_DIR", tmp_path / "shots"))
    out.mkdir(parents=True, exist_ok=True)

    for name, (width, height) in WIDTHS.items():
        png = out / f"digest-{name}.png"
        screenshot(html, png, width, height, tmp_path / f"profile-{name}")
        with Image.open(png) as image:
            assert image.size == (width, height)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
            # A real page: text, tables, charts — many colours, not a blank or error page.
            assert colours is None or len(colours) > 200
    assert "&lt;script&gt;" in html.read_text()
