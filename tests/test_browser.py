"""The admin UI in headless Debian Chromium against a real `cqaface serve`: sign in, enrol a
small zip and watch the job finish, search with a probe and see the Rank-1 card and the
attention overlay, delete a subject; manage users and API keys (one-time secrets, revocation,
role limits, the last admin kept); follow a job's progress by server-sent events, and by
polling where the browser has none. Screenshots go to var/test-artifacts/."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from server_process import ROOT, cli, request, stack_env, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "var" / "test-artifacts"
PASSWORD = "browser test password"
ADMIN = "admin@example.org"


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
def stack(tmp_path_factory):
    """`cqaface serve` on a SQLite gallery, jobs in-process, an admin made by the CLI and an
    admin key to read the server's metrics: (base URL, database URL, environment, folder)."""
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
        ADMIN,
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    server, base = start_server(env, tmp)
    yield SimpleNamespace(base=base, url=url, env=env, tmp=tmp, accounts={})
    server.stop()


@pytest.fixture(scope="module")
def site(stack):
    return stack.base


@pytest.fixture(scope="module")
def metrics_key(stack):
    return cli(stack.env, "apikey", "create", "--name", "metrics", "--scopes", "admin").strip()


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


def _text(driver, element_id: str) -> str | None:
    """An element's text read in one step inside the page: the page's live updates replace
    the text of the job's fields, and an element handle read across such an update fails
    ("node does not belong to the document") where a script sees either the old or new text."""
    script = "const e = document.getElementById(arguments[0]); return e && e.innerText;"
    return driver.execute_script(script, element_id)


def test_sign_in_enrol_search_and_delete(browser, site, orl_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(f"{site}/subjects")
    assert "/login" in driver.current_url  # pages need a login
    driver.find_element(By.ID, "email").send_keys(ADMIN)
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
    _wait(driver, lambda d: _text(d, "job-status") == "done", timeout=180)
    _wait(driver, lambda d: "corrupt.png" in (_text(d, "failed") or ""))
    assert _text(driver, "job-done") == "10"
    assert "enrolled 9" in _text(driver, "job-counts")
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
    _wait(driver, lambda d: d.find_elements(By.ID, "delete-subject"))[0].click()
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Delete “s3”?")
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


# ----- accounts -----------------------------------------------------------------------------


def _sign_in(driver, site: str, email: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{site}/login")
    driver.delete_all_cookies()  # whoever was signed in is not any more
    driver.get(f"{site}/login")
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    _wait(driver, lambda d: "/login" not in d.current_url)


def _error(driver) -> tuple[str, str]:
    """The heading and message of the error page, once it is shown: after a click the old
    page may still be there (its h1 went stale under a fresh-clone run of c25486b)."""
    from selenium.webdriver.common.by import By

    def shown(d) -> tuple[str, str] | None:
        message = d.find_elements(By.ID, "error-message")
        return (d.find_element(By.TAG_NAME, "h1").text, message[0].text) if message else None

    return _wait(driver, shown)


def test_admin_creates_users_and_the_last_admin_is_kept(browser, stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, site = browser, stack.base
    _sign_in(driver, site, ADMIN, PASSWORD)
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": site, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    # An operator with a generated password (their name is markup, shown as written).
    driver.get(f"{site}/users")
    driver.find_element(By.ID, "new-email").send_keys("ops@example.org")
    driver.find_element(By.ID, "new-name").send_keys("<b>Ops</b>")
    Select(driver.find_element(By.ID, "new-role")).select_by_value("operator")
    driver.find_element(By.ID, "new-generated").click()
    driver.find_element(By.ID, "create-user").click()
    secret = _wait(driver, lambda d: d.find_elements(By.ID, "secret"))[0]
    password = secret.get_attribute("value")
    assert len(password) == 16
    assert "shown only now" in driver.find_element(By.ID, "secret-warning").text
    driver.find_element(By.ID, "copy-secret").click()
    _wait(driver, lambda d: d.find_element(By.ID, "copy-secret").text == "Copied")
    pasted = driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], () => arguments[0](null));"
    )
    assert pasted == password
    _shot(driver, "08-password-once")
    # An analyst invited by a one-time link.
    driver.get(f"{site}/users")
    driver.find_element(By.ID, "new-email").send_keys("ana@example.org")
    driver.find_element(By.ID, "create-user").click()
    link = _wait(driver, lambda d: d.find_elements(By.ID, "secret"))[0].get_attribute("value")
    assert link.startswith(f"{site}/password/")
    stack.accounts.update(ops=password, link=link)

    driver.get(f"{site}/users")
    assert password not in driver.page_source
    rows = {
        row.get_attribute("data-email"): row
        for row in driver.find_elements(By.CSS_SELECTOR, "#users tbody tr")
    }
    ops = rows["ops@example.org"]
    assert ops.find_element(By.CLASS_NAME, "user-name").text == "<b>Ops</b>"
    assert ops.find_element(By.CLASS_NAME, "user-role").text == "operator"
    assert rows["ana@example.org"].find_element(By.CLASS_NAME, "user-status").text == "invited"
    _shot(driver, "09-users")

    # The only admin can neither demote nor disable themselves.
    rows[ADMIN].find_element(By.CLASS_NAME, "user-email").click()
    Select(_wait(driver, lambda d: d.find_elements(By.ID, "role"))[0]).select_by_value("operator")
    driver.find_element(By.ID, "save-role").click()
    heading, message = _error(driver)
    assert heading.startswith("409") and "last active admin" in message
    _shot(driver, "10-last-admin")
    driver.back()
    _wait(driver, lambda d: d.find_elements(By.ID, "disable"))[0].click()
    heading, message = _error(driver)
    assert heading.startswith("409") and "last active admin" in message
    driver.get(f"{site}/audit")
    log = driver.find_element(By.CSS_SELECTOR, "table.audit").text
    assert log.count("create_user") == 3, log  # the CLI's admin, the operator, the analyst
    assert "set_role" not in log and "disable_user" not in log


def test_keys_are_shown_once_revoked_after_confirming_and_limited_by_role(browser, stack):
    from selenium.webdriver.common.by import By

    driver, site = browser, stack.base
    _sign_in(driver, site, "ops@example.org", stack.accounts["ops"])
    driver.get(f"{site}/keys")
    offered = [e.get_attribute("value") for e in driver.find_elements(By.NAME, "scopes")]
    assert offered == ["identify", "enrol"]  # an operator's role: no admin scope
    driver.find_element(By.ID, "key-name").send_keys("scanner")
    driver.find_element(By.ID, "scope-enrol").click()
    driver.find_element(By.ID, "create-key").click()
    key = _wait(driver, lambda d: d.find_elements(By.ID, "secret"))[0].get_attribute("value")
    _, prefix, secret = key.split("_", 2)  # the secret itself may hold "_"
    assert "shown only now" in driver.find_element(By.ID, "secret-warning").text
    _shot(driver, "11-key-once")
    assert request("GET", f"{site}/api/v1/subjects", key=key)[0] == 200
    driver.find_element(By.ID, "done").click()
    row = _wait(driver, lambda d: d.find_elements(By.ID, f"key-{prefix}"))[0]
    assert row.find_element(By.CLASS_NAME, "key-requests").text == "1"
    assert "identify, enrol" in row.text and secret not in driver.page_source
    row.find_element(By.CLASS_NAME, "revoke").click()
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Revoke “scanner”?")
    assert request("GET", f"{site}/api/v1/subjects", key=key)[0] == 200  # not yet
    _shot(driver, "12-confirm-revoke")
    driver.find_element(By.ID, "confirm-revoke").click()
    _wait(driver, lambda d: "Revoked the key" in d.find_element(By.CLASS_NAME, "flash").text)
    row = driver.find_element(By.ID, f"key-{prefix}")
    assert row.find_element(By.CLASS_NAME, "key-state").text == "revoked"
    assert request("GET", f"{site}/api/v1/subjects", key=key)[0] == 401
    _shot(driver, "13-revoked")

    # The invited analyst sets a password through the link, once; creates no key.
    driver.delete_all_cookies()
    driver.get(stack.accounts["link"])
    driver.find_element(By.ID, "new-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "new-password-again").send_keys(PASSWORD)
    driver.find_element(By.ID, "set-password").click()
    _wait(driver, lambda d: "password is set" in d.find_element(By.CLASS_NAME, "flash").text)
    _sign_in(driver, site, "ana@example.org", PASSWORD)
    driver.get(f"{site}/keys")
    assert driver.find_elements(By.ID, "no-create") and not driver.find_elements(By.ID, "new-key")
    driver.get(f"{site}/users")
    assert _error(driver)[0].startswith("403")
    driver.get(stack.accounts["link"])
    heading, message = _error(driver)
    assert heading.startswith("404") and "not valid" in message


# ----- live job progress --------------------------------------------------------------------


COUNTED = r'cqaface_http_requests_total\{method="(\w+)",endpoint="([^"]+)",status="(\d+)"\} (\S+)'


def _gauges(site: str, key: str) -> dict[str, float]:
    """This server's metrics: gauges by name and request counts by `METHOD endpoint status`."""
    status, text = request("GET", f"{site}/api/v1/metrics", key=key)
    assert status == 200, text
    found: dict[str, float] = {}
    for line in text.splitlines():
        counted = re.match(COUNTED, line)
        if counted:
            found[" ".join(counted.groups()[:3])] = float(counted.group(4))
        elif line.startswith("cqaface_") and " " in line and "{" not in line:
            name, value = line.split(" ")
            found[name] = float(value)
    return found


def _queued_job(stack, photos: list[tuple[str, Path]]) -> int:
    """A job made in the server's database and handed to nobody: it stays queued until run."""
    from identify.gallery.db import make_engine
    from workers import enrolment

    engine = make_engine(stack.url)
    try:
        return enrolment.create_job(engine, photos, source="browser test", kind="files")
    finally:
        engine.dispose()


def test_a_jobs_progress_arrives_by_events_while_it_runs(browser, stack, metrics_key, orl_dir):
    from selenium.webdriver.common.by import By

    from identify.gallery import jobs
    from identify.services import Services
    from identify.settings import Settings

    driver, site = browser, stack.base
    broken = stack.tmp / "broken.png"
    broken.write_bytes(b"not a photo")
    photos = [(f"s{n}", orl_dir / f"s{n}" / f"{k}.pgm") for n in (4, 5) for k in (1, 2)]
    job_id = _queued_job(stack, [("s5", broken), *photos])
    _sign_in(driver, site, ADMIN, PASSWORD)
    driver.get(f"{site}/jobs/{job_id}")
    _wait(driver, lambda d: d.find_element(By.ID, "job").get_attribute("data-live") == "events")
    _wait(driver, lambda d: _gauges(site, metrics_key)["cqaface_event_streams"] == 1)
    assert _text(driver, "job-status") == "queued"
    # Now run it: the real enrolment of a job, in this process, on the server's database.
    settings = Settings.from_env(
        {
            "CQAFACE_DATABASE_URL": stack.url,
            "CQAFACE_DATA_DIR": str(stack.tmp / "runner"),
        }
    )
    runner = Services(settings)
    try:
        jobs.run_job(runner.enroller, job_id, save_indexes=runner.save_indexes)
    finally:
        runner.close()
    _wait(driver, lambda d: _text(d, "job-status") == "done", timeout=120)
    _wait(driver, lambda d: "broken.png" in (_text(d, "failed") or ""))
    assert _text(driver, "job-done") == "5"
    assert sorted(_text(driver, "job-counts").split(", ")) == ["enrolled 4", "unreadable 1"]
    _shot(driver, "14-live-job-done")
    seen = _wait(
        driver, lambda d: (g := _gauges(site, metrics_key))["cqaface_event_streams"] == 0 and g
    )
    assert seen["GET /jobs/<int:job_id>/events 200"] >= 1
    assert "GET /jobs/<int:job_id>.json 200" not in seen  # no page polled: events carried it


def test_a_closed_page_ends_its_stream_and_without_events_the_page_polls(
    browser, stack, metrics_key, orl_dir
):
    from selenium.webdriver.common.by import By

    driver, site = browser, stack.base
    job_id = _queued_job(stack, [("s6", orl_dir / "s6" / "1.pgm")])
    _sign_in(driver, site, ADMIN, PASSWORD)
    driver.get(f"{site}/jobs/{job_id}")
    _wait(driver, lambda d: d.find_element(By.ID, "job").get_attribute("data-live") == "events")
    _wait(driver, lambda d: _gauges(site, metrics_key)["cqaface_event_streams"] == 1)
    driver.get(f"{site}/keys")  # the job's page is gone: its stream ends on the server
    _wait(driver, lambda d: _gauges(site, metrics_key)["cqaface_event_streams"] == 0, timeout=30)

    script = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"}
    )
    try:
        driver.get(f"{site}/jobs/{job_id}")
        _wait(
            driver, lambda d: d.find_element(By.ID, "job").get_attribute("data-live") == "polling"
        )
        _wait(driver, lambda d: _gauges(site, metrics_key).get("GET /jobs/<int:job_id>.json 200"))
        assert _gauges(site, metrics_key)["cqaface_event_streams"] == 0
        cli(stack.env, "job", "cancel", str(job_id))
        _wait(driver, lambda d: _text(d, "job-status") == "cancelled")
        _shot(driver, "15-polled")
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )
