"""Render the report in headless Chromium: content shows, filters work, no console errors."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = "/usr/bin/chromedriver"


def _driver():
    if CHROMIUM is None or not Path(DRIVER).is_file():
        pytest.skip(
            "headless Chromium is not installed (apt-get install chromium "
            "chromium-driver, or `make browser`)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="report-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts), profile


def test_report_renders_without_console_errors(reported) -> None:
    _, paths = reported
    driver, profile = _driver()
    from selenium.webdriver.common.by import By

    try:
        driver.get(paths.report.resolve().as_uri())
        assert driver.title == "Solar-farm model audit"
        heading = driver.find_element(By.CSS_SELECTOR, "#summary h2")
        assert heading.is_displayed() and heading.text == "Summary of flags"
        for ident in ("flags-table", "sanity-table", "faithfulness-table", "cues-table"):
            assert driver.find_element(By.ID, ident).is_displayed()
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || !i.naturalWidth).length"
        )
        assert broken == 0
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == 2 and all(c.is_displayed() for c in cards)
        driver.find_element(By.CSS_SELECTOR, "[data-show='not_flagged']").click()
        shown = [c for c in cards if c.is_displayed()]
        assert len(shown) == 1 and "w2" in shown[0].text
        assert driver.find_element(By.ID, "shown-count").text == "1 shown"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == [], errors
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
