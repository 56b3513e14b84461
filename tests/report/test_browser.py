"""The report opened in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``python3 dev.py test``) driven by selenium through the
system chromedriver, so nothing is downloaded. Checks: no console errors, every image
decoded and laid out with a non-zero size, the answer table on screen; saves screenshots.

A missing browser skips the test on a workstation and fails it in CI (``CI`` set).
``EDGESCALE_REPORT=PATH/report.html`` checks that report instead of one built from the
hand-made results; ``EDGESCALE_SCREENSHOT=PATH.png`` also copies the top-of-page
screenshot there (e.g. ``docs/report-screenshot.png``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_fixtures import full_results

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = (1400, 1000)


def _find(names: tuple[str, ...]) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def _browser() -> tuple[str, str]:
    browser, driver = _find(CHROMIUM), _find(("chromedriver",))
    if browser and driver:
        return browser, driver
    missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
    why = f"{missing} not on PATH: install Debian's chromium and chromium-driver (python3 dev.py test does)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def driver():
    browser, chromedriver = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser  # with the driver path below, selenium-manager (which downloads) never runs
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-extensions",
                f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "--hide-scrollbars"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    given = os.environ.get("EDGESCALE_REPORT")
    if given:
        return Path(given).resolve()
    from edgescale.report.build import build_report
    from edgescale.results import parse_results

    return build_report(parse_results(full_results()), tmp_path_factory.mktemp("report")).html


_IMAGES = """return Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, rw: r.width, rh: r.height};
});"""


def test_report_renders_in_chromium(driver, report, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop anything logged before this page
    driver.get(report.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    WebDriverWait(driver, 30).until(lambda d: all(i["complete"] for i in d.execute_script(_IMAGES)))

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors}"
    images = driver.execute_script(_IMAGES)
    assert len(images) >= 6, images  # two frontiers, comparison, degradation, latency, plan at least
    for img in images:
        assert img["w"] > 0 and img["h"] > 0, f"image not decoded: {img['alt']}"
        assert img["rw"] > 0 and img["rh"] > 0, f"image laid out with no size: {img['alt']}"
    answer = driver.execute_script(
        "const a = document.querySelector('#answer'); const r = a.getBoundingClientRect();"
        "return {top: r.top, rows: a.querySelectorAll('tr').length, text: a.innerText};"
    )
    assert answer["top"] < VIEWPORT[1] / 2 and answer["rows"] >= 2  # the answer is the first thing on screen
    assert "use " in answer["text"] or "train a new model" in answer["text"] or "infeasible" in answer["text"]
    # no request left the page: everything is inline (data: URIs), nothing was fetched
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith("data:") for u in fetched), fetched

    top = tmp_path / "report-top.png"
    assert driver.save_screenshot(str(top)) and top.stat().st_size > 10_000
    full = _full_page(driver, tmp_path / "report-full.png")
    assert full.stat().st_size > top.stat().st_size
    target = os.environ.get("EDGESCALE_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(top, target)


def _full_page(driver, path: Path) -> Path:
    """The whole page in one PNG, through the DevTools protocol (no scrolling and stitching)."""
    import base64

    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
