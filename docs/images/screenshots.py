"""Screenshots of the demo's digest for the docs, from headless Chromium (Debian ``chromium`` and
``chromium-driver``, driven by Selenium): the whole page at desktop width and at phone width.

    python docs/images/screenshots.py            # writes docs/images/digest-desktop.png, digest-phone.png

The demo runs at a fixed time (``--at``) so the pictures show a known day: its digest of 4 December,
which reports on the 3rd, the day of the runaway query.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (CSS width, device pixel ratio): a desktop mail client's reading pane, and a phone.
SIZES = {"desktop": (1024, 1), "phone": (390, 2)}


def digest_html(folder: Path, at: datetime) -> Path:
    from spendwatch.demo import run_demo
    from tests.doubles.clock import FixedClock

    result = run_demo(folder / "spendwatch-demo", FixedClock(at), say=lambda _: None)
    return next(p for p in result.digest if p.suffix == ".html")


def shoot(html: Path, png: Path, width: int, ratio: int, profile: Path) -> tuple[int, int]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium") or shutil.which("chromium-browser"))
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option(
        "mobileEmulation", {"deviceMetrics": {"width": width, "height": 900, "pixelRatio": ratio}}
    )
    driver = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
    try:
        driver.get(html.as_uri())
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": ratio, "mobile": ratio > 1},
        )
        png.write_bytes(driver.get_screenshot_as_png())
        return width, height
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", default="2026-12-04T09:30:00+00:00", help="the demo's clock (ISO 8601, UTC)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--html", type=Path, help="screenshot this digest .html instead of running the demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        html = args.html.resolve() if args.html else digest_html(Path(folder), datetime.fromisoformat(args.at))
        for name, (width, ratio) in SIZES.items():
            png = args.out / f"digest-{name}.png"
            size = shoot(html, png, width, ratio, Path(folder) / f"profile-{name}")
            print(f"{png}: {size[0]}x{size[1]} CSS px at {ratio}x")


if __name__ == "__main__":
    main()
