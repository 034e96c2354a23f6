"""Swagger UI and the demo page in a real browser: Debian's chromium driven by selenium.

Uses /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver);
nothing is downloaded (Selenium Manager is never asked for a driver). Screenshots go to
docs/screenshots/. Skipped when chromium is missing, failed under CI.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from facesvc.testing import ServerProcess
from tests.conftest import LFW
from tests.e2e.conftest import require_tool
from tests.servers import http_client

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1280,1000",
)
TIMEOUT = 60


def lfw_path(name: str, number: int) -> Path:
    return LFW / name / f"{name}_{number:04d}.jpg"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium = require_tool(
        "chromium", "/usr/bin/chromium", install="apt-get install chromium chromium-driver"
    )
    driver_path = require_tool(
        "chromedriver", "/usr/bin/chromedriver", install="apt-get install chromium-driver"
    )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Callable[[Any], Any], what: str) -> Any:
    try:
        return WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(condition)
    except TimeoutException:
        path = Path(tempfile.gettempdir()) / "facesvc-browser-failure.png"
        driver.save_screenshot(str(path))
        logs = [entry["message"] for entry in driver.get_log("browser")]
        pytest.fail(f"timed out waiting for {what} (screenshot: {path}); console: {logs}")


def visible(driver: WebDriver, css: str) -> WebElement:
    element: WebElement = wait(
        driver, ec.visibility_of_element_located((By.CSS_SELECTOR, css)), css
    )
    return element


def clickable(driver: WebDriver, css: str) -> WebElement:
    element: WebElement = wait(driver, ec.element_to_be_clickable((By.CSS_SELECTOR, css)), css)
    element.click()
    return element


def loaded_urls(driver: WebDriver) -> list[str]:
    urls: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    return [driver.current_url, *urls]


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000, "an empty screenshot"
    return path


# --- Swagger UI ---------------------------------------------------------------------------


def test_swagger_ui_authorize_and_try_detect(
    browser: WebDriver, live_server: ServerProcess, data_dir: Path
) -> None:
    base = live_server.base_url
    browser.get(f"{base}/docs")
    visible(browser, "#operations-analysis-detect_faces")

    # Authorize: the ApiKey scheme's dialog, then close it.
    clickable(browser, "button.authorize")
    key_input = visible(browser, ".modal-ux .auth-container input")
    key_input.send_keys(live_server.api_key)
    clickable(browser, ".modal-ux .auth-btn-wrapper button.authorize")
    clickable(browser, ".modal-ux button.btn-done")
    wait(browser, ec.invisibility_of_element_located((By.CSS_SELECTOR, ".modal-ux")), "no dialog")
    assert "locked" in browser.find_element(By.CSS_SELECTOR, "button.authorize").get_attribute(
        "class"
    )

    # POST /v1/detect: expand, Try it out, choose an LFW photo, Execute.
    block = "#operations-analysis-detect_faces"
    clickable(browser, f"{block} .opblock-summary-control")
    clickable(browser, f"{block} button.try-out__btn")
    upload = wait(
        browser,
        ec.presence_of_element_located((By.CSS_SELECTOR, f"{block} input[type=file]")),
        "the file input",
    )
    upload.send_keys(str(lfw_path("Colin_Powell", 1)))
    clickable(browser, f"{block} button.execute")

    status = visible(browser, f"{block} .live-responses-table tbody .response-col_status")
    wait(browser, lambda _: status.text.strip() == "200", "a 200 response")
    body = visible(browser, f"{block} .live-responses-table tbody .response-col_description pre")
    assert '"faces"' in body.text
    assert '"landmarks"' in body.text
    curl = browser.find_element(By.CSS_SELECTOR, f"{block} .curl-command").text
    assert f"X-API-Key: {live_server.api_key}" in curl, "the authorised key was not sent"

    for url in loaded_urls(browser):
        assert url.startswith(base), f"/docs loaded {url}: it must work offline"
    assert console_errors(browser) == []

    # Frame the authorised lock and the operation: its request and its response.
    browser.set_window_size(1280, 1600)
    browser.execute_script(
        "document.querySelector('.scheme-container').scrollIntoView({block: 'start'});"
    )
    screenshot(browser, "swagger_detect.png")
    browser.set_window_size(1280, 1000)


# --- the demo page ------------------------------------------------------------------------

# Pixels of the first face's box colour (#22c55e) on the canvas: drawn, not just announced.
COUNT_BOX_PIXELS = """
const canvas = document.getElementById('canvas');
const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  if (Math.abs(data[i] - 0x22) < 12 && Math.abs(data[i + 1] - 0xc5) < 12
      && Math.abs(data[i + 2] - 0x5e) < 12) n++;
}
return n;
"""


def choose_photo(driver: WebDriver, path: Path) -> None:
    # Cleared first: two photos can give the same summary (same face count, size and ms),
    # so "the summary changed" is only a sign of the new analysis once the old one is gone.
    driver.execute_script("document.getElementById('summary').textContent = ''")
    driver.find_element(By.ID, "file").send_keys(str(path))
    wait(
        driver,
        lambda d: (
            d.find_element(By.ID, "canvas").get_attribute("data-state") in {"done", "error"}
            and d.find_element(By.ID, "summary").text != ""
        ),
        f"the analysis of {path.name}",
    )
    canvas = driver.find_element(By.ID, "canvas")
    assert canvas.get_attribute("data-state") == "done", driver.find_element(By.ID, "summary").text


def status_of(driver: WebDriver, element_id: str, states: set[str]) -> tuple[str, str]:
    element = driver.find_element(By.ID, element_id)
    wait(driver, lambda _: element.get_attribute("data-state") in states, f"#{element_id}")
    return str(element.get_attribute("data-state")), element.text


def test_demo_page_draws_faces_then_enrols_and_logs_in(
    browser: WebDriver, live_server: ServerProcess, data_dir: Path
) -> None:
    base = live_server.base_url
    browser.get(f"{base}/demo")
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("data-ready"), "JS")
    api_key = browser.find_element(By.ID, "api-key")
    api_key.clear()
    api_key.send_keys(live_server.api_key)

    # A group photo: every face's box, five landmarks and 468-point mesh drawn on the canvas.
    group = data_dir / "dlib_faces" / "2008_002506.jpg"
    with http_client(live_server) as api:
        detected = api.post("/v1/detect", files={"image": (group.name, group.read_bytes())})
    assert detected.status_code == 200, detected.text
    faces = len(detected.json()["faces"])
    assert faces >= 2
    choose_photo(browser, group)
    canvas = browser.find_element(By.ID, "canvas")
    assert canvas.get_attribute("data-faces") == str(faces)
    assert f"{faces} faces" in browser.find_element(By.ID, "summary").text
    assert browser.execute_script(COUNT_BOX_PIXELS) > 200, "no box drawn"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#faces li")) == min(faces, 8)
    browser.execute_script("document.activeElement.blur()")
    screenshot(browser, "demo_landmarks.png")

    choose_photo(browser, lfw_path("Colin_Powell", 1))
    assert browser.find_element(By.ID, "canvas").get_attribute("data-faces") == "1"

    # Enrol two photos under one name, then log in with a third.
    name = browser.find_element(By.ID, "enrol-name")
    name.send_keys("Colin Powell")
    browser.find_element(By.ID, "enrol").click()  # the consent box is not ticked yet
    assert browser.find_element(By.ID, "enrol-result").get_attribute("data-state") != "ok"
    browser.find_element(By.ID, "enrol-consent").click()
    browser.find_element(By.ID, "enrol").click()
    state, text = status_of(browser, "enrol-result", {"ok", "error"})
    assert (state, text) == ("ok", "Enrolled Colin Powell (1 photo)."), text
    choose_photo(browser, lfw_path("Colin_Powell", 2))
    browser.find_element(By.ID, "enrol").click()
    wait(
        browser,
        lambda d: (
            "2 photos" in d.find_element(By.ID, "enrol-result").text
            or d.find_element(By.ID, "enrol-result").get_attribute("data-state") == "error"
        ),
        "the second enrolment",
    )
    assert browser.find_element(By.ID, "enrol-result").get_attribute("data-state") == "ok"

    choose_photo(browser, lfw_path("Colin_Powell", 3))
    browser.find_element(By.ID, "login").click()
    state, text = status_of(browser, "login-result", {"match", "unknown", "error"})
    assert state == "match", text
    assert "Welcome, Colin Powell!" in text

    choose_photo(browser, lfw_path("Ariel_Sharon", 1))
    browser.find_element(By.ID, "login").click()
    state, text = status_of(browser, "login-result", {"match", "unknown", "error"})
    assert state == "unknown", text
    assert text.startswith("Unknown person"), text

    for url in loaded_urls(browser):
        assert url.startswith(base) or url.startswith("blob:"), f"/demo loaded {url}"
    assert console_errors(browser) == []

    # The page stored one user with two faces through the public API.
    with http_client(live_server, timeout=30) as api:
        # other tests share the server: its users may not all fit the default page
        listed = api.get("/v1/users", params={"limit": 500}).json()["items"]
        users = [u for u in listed if u["name"] == "Colin Powell"]
        assert [u["face_count"] for u in users] == [2]
        assert api.delete(f"/v1/users/{users[0]['id']}").status_code == 204
