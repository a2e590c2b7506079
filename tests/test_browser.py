"""The admin UI in headless Debian Chromium against a real `cqaface serve`: sign in, enrol a
small zip and watch the job finish, search with a probe and see the Rank-1 card and the
attention overlay, delete a subject. Screenshots go to var/test-artifacts/."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from server_process import ROOT, cli, stack_env, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "var" / "test-artifacts"
PASSWORD = "browser test password"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (make setup)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`cqaface serve` on a SQLite gallery, jobs in-process, and an admin made by the CLI."""
    from identify.gallery import migrate

    tmp = tmp_path_factory.mktemp("site")
    url = f"sqlite:///{tmp / 'gallery.db'}"
    migrate.upgrade(url)
    env = stack_env(url, tmp, broker=False)
    cli(
        env,
        "admin",
        "create-user",
        "--email",
        "admin@example.org",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    server, base = start_server(env, tmp)
    yield base
    server.stop()


def _shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    driver.save_screenshot(str(path))
    return path


def _wait(driver, condition, timeout: float = 60):
    """Polls `condition`; an element that the page's own polling replaced between finding it
    and reading it (stale) is found again at the next poll, not a failure."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(condition)


def test_sign_in_enrol_search_and_delete(browser, site, orl_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(f"{site}/subjects")
    assert "/login" in driver.current_url  # pages need a login
    driver.find_element(By.ID, "email").send_keys("admin@example.org")
    driver.find_element(By.ID, "password").send_keys("not the password")
    driver.find_element(By.ID, "sign-in").click()
    error = _wait(driver, lambda d: d.find_elements(By.ID, "login-error"))[0]  # after the post
    assert "Wrong e-mail or password" in error.text
    driver.find_element(By.ID, "email").clear()
    driver.find_element(By.ID, "email").send_keys("admin@example.org")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    _wait(driver, ec.url_contains("/subjects"))
    _shot(driver, "01-signed-in")

    # Enrol a small zip: three ORL subjects, three photos each, one broken file.
    archive = tmp_path / "three people.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name in ("s1", "s2", "s3"):
            for i in (1, 2, 3):
                out.write(orl_dir / name / f"{i}.pgm", f"{name}/{i}.pgm")
        out.writestr("s3/corrupt.png", b"not a photo")
    driver.get(f"{site}/enrol")
    driver.find_element(By.ID, "archive").send_keys(str(archive))
    driver.find_element(By.ID, "upload").click()
    _wait(driver, ec.presence_of_element_located((By.ID, "job-status")))
    _shot(driver, "02-job-started")
    _wait(driver, lambda d: d.find_element(By.ID, "job-status").text == "done", timeout=180)
    _wait(driver, lambda d: "corrupt.png" in d.find_element(By.ID, "failed").text)
    assert driver.find_element(By.ID, "job-done").text == "10"
    assert "enrolled 9" in driver.find_element(By.ID, "job-counts").text
    assert driver.find_element(By.ID, "job-progress").get_attribute("value") == "10"
    _shot(driver, "03-job-done")

    # Probe search: a held-back photo of s2.
    driver.get(f"{site}/search")
    driver.find_element(By.ID, "probe").send_keys(str(orl_dir / "s2" / "8.pgm"))
    Select(driver.find_element(By.ID, "mask")).select_by_value("auto")
    driver.find_element(By.ID, "search").click()
    card = _wait(driver, ec.presence_of_element_located((By.ID, "rank1-1")))
    assert card.text.startswith("Rank-1: s2") or card.text.startswith("unknown"), card.text
    first = driver.find_element(
        By.CSS_SELECTOR, "#face-1 table.candidates tbody tr td:nth-child(3)"
    )
    assert first.text == "s2"
    overlay = driver.find_element(By.ID, "attention-overlay")
    assert driver.execute_script("return arguments[0].naturalWidth", overlay) > 0
    thumbs = driver.find_elements(By.CSS_SELECTOR, "#face-1 img.thumb")
    assert thumbs and all(
        driver.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs
    )
    _shot(driver, "04-search")

    driver.get(f"{site}/")
    assert driver.find_element(By.ID, "gallery-size").text == "3"
    assert "three people.zip" in driver.find_element(By.CSS_SELECTOR, "table.jobs").text
    _shot(driver, "04b-dashboard")

    # Delete a subject, with its confirmation page.
    driver.get(f"{site}/subjects?q=s3")
    driver.find_element(By.CLASS_NAME, "subject-name").click()
    driver.find_element(By.ID, "delete-subject").click()
    assert "Delete “s3”?" in driver.find_element(By.TAG_NAME, "h1").text
    _shot(driver, "05-confirm-delete")
    driver.find_element(By.ID, "confirm-delete").click()
    _wait(driver, lambda d: "Deleted subject s3" in d.find_element(By.CLASS_NAME, "flash").text)
    names = [e.text for e in driver.find_elements(By.CLASS_NAME, "subject-name")]
    assert names == ["s1", "s2"]
    _shot(driver, "06-deleted")

    driver.get(f"{site}/audit")
    log = driver.find_element(By.CSS_SELECTOR, "table.audit").text
    for action in ("delete_subject", "identify", "enrolment", "login"):
        assert action in log, log
    Select(driver.find_element(By.NAME, "action")).select_by_value("delete_subject")
    driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
    _wait(driver, lambda d: "action=delete_subject" in d.current_url)  # the filtered page
    rows = driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    assert len(rows) == 1 and "s3" in rows[0].text and "admin@example.org" in rows[0].text
    _shot(driver, "07-audit")
    # No script error and no CSP violation; the one network error is the refused password.
    logs = driver.get_log("browser")
    errors = [e for e in logs if e["level"] == "SEVERE" and "(UNAUTHORIZED)" not in e["message"]]
    assert not errors, errors
