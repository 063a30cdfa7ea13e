"""The rater app driven in a real headless Chromium: keyboard, mouse, reload, resume, no script injection."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from .test_annotation_app import EVIL, RunningApp, make_items, write_store

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"),
]


def chromium(profile):
    """A headless Chromium driven by Debian's chromedriver, with its profile in `profile`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: selenium-manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(15)
    driver.implicitly_wait(5)  # after a login or logout, wait for the next page's elements
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _wait_for_item_change(driver, previous: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def changed(d):
        found = d.find_elements("css selector", "#item, #done")
        current = found[0].get_attribute("data-item-id") if found else None
        return (current or "done") if found and current != previous else False

    # The old page may go away between finding an element and reading it.
    return WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(changed)


def _progress(driver) -> tuple[int, int]:
    element = driver.find_element("id", "progress")
    return int(element.get_attribute("data-done")), int(element.get_attribute("data-total"))


def test_rate_with_keyboard_and_mouse_reload_and_resume(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    write_store(tmp_path / "images", ["aaaa000000000001"])
    app = RunningApp(tmp_path, make_items(count=5, overlap=2), images=tmp_path / "images")
    try:
        browser.get(app.url + "/")
        browser.find_element(By.ID, "rater").send_keys("alice" + Keys.ENTER)
        first = browser.find_element(By.ID, "item").get_attribute("data-item-id")
        assert first == "ei-correct-evil" and _progress(browser) == (0, 7)
        # The caption with markup is shown as text, and nothing in it ran.
        assert "Caption <script>window.__xss = 1</script>" in browser.find_element(By.ID, "item-title").text
        assert browser.execute_script("return typeof window.__xss") == "undefined"
        stored = browser.find_element(By.CSS_SELECTOR, "figure.candidate img")
        assert browser.execute_script("return arguments[0].naturalWidth", stored) == 24  # from the image store
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("2")  # keyboard: "no"
        second = _wait_for_item_change(browser, first)
        assert EVIL in browser.find_element(By.ID, "item-text").text
        assert browser.execute_script("return typeof window.__xss") == "undefined"
        browser.find_element(By.ID, "label-yes").click()  # mouse
        third = _wait_for_item_change(browser, second)
        browser.find_element(By.TAG_NAME, "body").send_keys("1")  # keyboard: "no" (ordinal, lowest first)
        fourth = _wait_for_item_change(browser, third)
        assert app.rows("alice") == [(first, "no"), (second, "yes"), (third, "no")]
        assert _progress(browser) == (3, 7)
        browser.refresh()  # reload: same place, nothing rated twice
        assert browser.find_element(By.ID, "item").get_attribute("data-item-id") == fourth
        assert len(app.rows("alice")) == 3
        # A fresh browser session under the same name resumes at the same item.
        browser.delete_all_cookies()
        browser.get(app.url + "/")
        browser.find_element(By.ID, "rater").send_keys("alice")
        browser.find_element(By.ID, "start").click()
        assert browser.find_element(By.ID, "item").get_attribute("data-item-id") == fourth
        # Changing the previous answer updates the row instead of adding one.
        browser.find_element(By.ID, "previous").click()
        assert _wait_for_item_change(browser, fourth) == third
        assert "current" in browser.find_element(By.ID, "label-no").get_attribute("class")
        browser.find_element(By.TAG_NAME, "body").send_keys("3")
        _wait_for_item_change(browser, third)
        assert app.rows("alice")[-1] == (third, "yes") and len(app.rows("alice")) == 3
        # Another rater starts at the beginning, with their own progress.
        browser.find_element(By.ID, "logout").click()
        browser.find_element(By.ID, "rater").send_keys("bob" + Keys.ENTER)
        assert browser.find_element(By.ID, "item").get_attribute("data-item-id") == first
        assert re.fullmatch(r"bob", browser.find_element(By.ID, "rater-name").text)
    finally:
        app.close()
