"""The studio page in a real browser (Debian's headless Chromium through Selenium and the system chromedriver):
the picture and the classes show; five clips of a held-out action are recorded, enrolled by name, and the live label
becomes that action; removing it takes it away; a bad name is refused with a visible message; a second tab follows.

The tiny random-init model of the tests recognises the held-out action ('a circle growing', a class of the val
split) from its five recorded shots: the source is that action only, so its own prototype is the nearest one.
"""
import os
import shutil
from pathlib import Path

import pytest
from conftest import HELD_OUT_NAME, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_COPY = Path("/work/helpers/studio.png")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
if not CHROMIUM or not os.access(CHROMEDRIVER, os.X_OK):
    pytest.skip("no system Chromium + chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run "
                "installs them)", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
              "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(a)
    # the system chromedriver: Selenium Manager never downloads a browser or driver here
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _text(driver, css):
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                                 css)


def _class_names(driver):  # read in one script: the list is re-rendered when the classes change
    return driver.execute_script("return [...document.querySelectorAll('#classes li')].map(l => l.dataset.name);")


def _thumbnails(driver):
    return driver.execute_script("return [...document.querySelectorAll('.clip img')].filter(i => i.naturalWidth > 0)"
                                 ".length;")


def _picture_shown(driver):
    return driver.execute_script("const i = document.getElementById('live'); return i.complete !== undefined && "
                                 "i.naturalWidth > 0;")


def _alert(driver):
    from selenium.common.exceptions import NoAlertPresentException
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


def test_teach_from_the_page(studio, browser, tmp_path, studio_bundle):
    from clipfsar.runtime.bundle.reader import Bundle
    d = browser
    d.get(studio.url)
    classes = list(Bundle.open(studio_bundle).store.class_names)
    wait_for(lambda: _class_names(d) == classes, 20, "the classes in the page")
    wait_for(lambda: _picture_shown(d), 20, "the live picture")
    wait_for(lambda: _text(d, "#label") in classes + ["unknown"], 20, "a live decision")
    assert "live" in _text(d, "#source-state")

    # record 5 clips (the default) with a short countdown and pause
    for field, value in (("countdown", "0.5"), ("pause", "0.2")):
        el = d.find_element(By.ID, field)
        el.clear()
        el.send_keys(value)
    assert d.find_element(By.ID, "shots").get_attribute("value") == "5"
    d.find_element(By.ID, "record").click()
    wait_for(lambda: "recording: recording" in (_text(d, "#rec-state") or ""), 10, "the recording to start")
    d.save_screenshot(str(tmp_path / "recording.png"))
    wait_for(lambda: _thumbnails(d) == 5, 90, "five thumbnails")  # 5 clips in real time; slower under load
    d.save_screenshot(str(tmp_path / "recorded.png"))
    d.find_element(By.ID, "name").send_keys(HELD_OUT_NAME)
    d.find_element(By.ID, "enroll").click()
    wait_for(lambda: HELD_OUT_NAME in _class_names(d), 20, "the new class in the list")
    wait_for(lambda: _text(d, "#label") == HELD_OUT_NAME, 20, "the live label to become the new class")
    shot = tmp_path / "studio.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if SCREENSHOT_COPY.parent.is_dir() and os.access(SCREENSHOT_COPY.parent, os.W_OK):
        shutil.copy(shot, SCREENSHOT_COPY)

    # a second tab sees the same state and the same live feed
    d.switch_to.new_window("tab")
    d.get(studio.url)
    wait_for(lambda: HELD_OUT_NAME in _class_names(d), 20, "the new class in a second tab")
    wait_for(lambda: _picture_shown(d), 20, "the live picture in a second tab")
    second = d.current_window_handle
    d.switch_to.window(d.window_handles[0])

    # remove it from the first tab: gone in both
    d.execute_script("document.querySelector(`#classes li[data-name=\"${arguments[0]}\"] button.remove`).click()",
                     HELD_OUT_NAME)
    wait_for(lambda: _alert(d), 5, "the confirmation").accept()
    wait_for(lambda: HELD_OUT_NAME not in _class_names(d), 20, "the class gone")
    d.switch_to.window(second)
    wait_for(lambda: HELD_OUT_NAME not in _class_names(d), 20, "the class gone in the second tab")
    d.switch_to.window(d.window_handles[0])

    # a bad name is refused, with a visible message
    d.find_element(By.ID, "name").send_keys("../outside")
    d.find_element(By.ID, "add-name").click()
    msg = wait_for(lambda: d.find_element(By.ID, "message").is_displayed() and _text(d, "#message"), 10,
                   "the refusal message")
    d.save_screenshot(str(tmp_path / "refused.png"))
    assert "cannot be a folder name" in msg
    assert "../outside" not in _class_names(d) and not (studio.clips.parent / "outside").exists()
