"""The report in headless Chromium, offline: pictures render, tables sort, links reach cards."""

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


def _numbers(driver, table: str, column: int) -> list[float]:
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{table} tbody tr'))"
        f".map(r => parseFloat(r.cells[{column}].getAttribute('data-v')))"
    )


def test_report_renders_offline_sorts_and_links_to_cards(reported) -> None:
    _, paths = reported
    driver, profile = _driver()
    from selenium.webdriver.common.by import By

    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
        )
        driver.get(paths.report.resolve().as_uri())
        assert driver.title == "Solar-farm model audit"
        answer = driver.find_element(By.ID, "answer")
        assert answer.is_displayed() and answer.text.startswith("The model")
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => !n.startsWith('data:'))"
        )
        assert fetched == []  # everything is inline
        for ident in ("overview-map", "training-curve"):
            image = driver.find_element(By.ID, ident)
            assert driver.execute_script("return arguments[0].naturalWidth", image) >= 500
        big = driver.find_elements(By.CSS_SELECTOR, ".card img.big")
        assert big and all(
            driver.execute_script("return arguments[0].naturalWidth", i) >= 256 for i in big
        )
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || !i.naturalWidth).length"
        )
        assert broken == 0
        # tables are collapsed at the end and sort on a click
        details = driver.find_element(By.ID, "flags-details")
        assert details.get_attribute("open") is None
        driver.execute_script("arguments[0].open = true", details)
        header = driver.find_element(
            By.XPATH, "//table[@id='flags-table']//th[text()='enrichment']"
        )
        column = int(driver.execute_script("return arguments[0].cellIndex", header))
        header.click()
        ascending = [v for v in _numbers(driver, "flags-table", column) if v is not None]
        assert len(ascending) >= 2 and ascending == sorted(ascending)
        header.click()
        descending = [v for v in _numbers(driver, "flags-table", column) if v is not None]
        assert descending == sorted(ascending, reverse=True)
        # a ranking row's link scrolls to its card
        link = driver.find_element(By.CSS_SELECTOR, "#ranking-table a[href='#card-label-farms-w2']")
        link.click()
        top = driver.execute_script(
            "return document.getElementById('card-label-farms-w2').getBoundingClientRect().top"
        )
        assert driver.execute_script("return window.scrollY") > 0 and abs(top) < 50
        assert driver.execute_script("return location.hash") == "#card-label-farms-w2"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == [], errors
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_card_filters_show_the_chosen_verdicts(reported) -> None:
    _, paths = reported
    driver, profile = _driver()
    from selenium.webdriver.common.by import By

    try:
        driver.get(paths.report.resolve().as_uri())
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == 2 and all(c.is_displayed() for c in cards)
        driver.find_element(By.CSS_SELECTOR, "[data-show='not_flagged']").click()
        shown = [c for c in cards if c.is_displayed()]
        assert len(shown) == 1 and "w2" in shown[0].text
        assert driver.find_element(By.ID, "shown-count").text == "1 shown"
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
