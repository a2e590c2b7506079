"""The hygiene page in headless Debian Chromium against a real `cqaface serve` on a gallery
with the planted faults of tests/hygiene_gallery.py: an operator runs a report, merges the
person enrolled under two names, undoes the merge, dismisses a pair, moves a foreign face to
its person and removes another. Screenshots go to var/test-artifacts/hygiene-*.png."""

from __future__ import annotations

import pytest
from hygiene_gallery import ALIAS_SUFFIX, MODEL, build, layout, people
from server_process import cli, stack_env, start_server
from test_browser import _shot, _sign_in, _wait, browser  # noqa: F401 (browser: a fixture)

EMAIL, PASSWORD = "curator@example.org", "hygiene test password"


@pytest.fixture(scope="module")
def site(tmp_path_factory, celeba_photos_dir):
    tmp = tmp_path_factory.mktemp("hygiene-site")
    url = f"sqlite:///{tmp / 'gallery.db'}"
    names = people(celeba_photos_dir)
    build(url, layout(celeba_photos_dir, foreign=names[0], alias=True))
    env = {**stack_env(url, tmp, broker=False), "CQAFACE_MODEL": str(MODEL)}
    cli(
        env,
        "admin",
        "create-user",
        "--email",
        EMAIL,
        "--role",
        "operator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    server, base = start_server(env, tmp)
    yield base, names
    server.stop()


def _rows(driver, css: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _flashed(driver, words: str) -> str:
    """The flash message saying ``words``, once the page after the action shows it."""
    from selenium.webdriver.common.by import By

    def shown(d):
        found = [e.text for e in d.find_elements(By.CSS_SELECTOR, "p.flash") if words in e.text]
        return found[0] if found else None

    return _wait(driver, shown)


def _cells(row) -> list[str]:
    from selenium.webdriver.common.by import By

    return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]


def test_an_operator_runs_the_report_and_fixes_what_it_finds(browser, site):  # noqa: F811
    from selenium.webdriver.common.by import By

    base, names = site
    p0, p1 = names[:2]
    _sign_in(browser, base, EMAIL, PASSWORD)
    browser.get(f"{base}/hygiene")
    assert browser.find_element(By.ID, "report-status").text == "No report yet."
    browser.find_element(By.ID, "run-report").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text == "done", timeout=120)
    assert len(_rows(browser, "tr.pair")) == 2
    assert len(_rows(browser, "tr.outlier")) == 16
    _shot(browser, "hygiene-report")

    # Merge the alias into its person, then undo it.
    [alias] = [r for r in _rows(browser, "tr.pair") if ALIAS_SUFFIX in r.text]
    alias.find_element(By.CSS_SELECTOR, "button.merge").click()
    _flashed(browser, "merged into subject")
    assert [ALIAS_SUFFIX in r.text for r in _rows(browser, "tr.pair")] == [False]
    assert len(_rows(browser, "tr.merge-row")) == 1
    _shot(browser, "hygiene-merged")
    _rows(browser, "tr.merge-row")[0].find_element(By.CSS_SELECTOR, "button.undo").click()
    _flashed(browser, " undone.")
    assert len(_rows(browser, "tr.pair")) == 2
    assert "undone" in _rows(browser, "tr.merge-row")[0].text

    # Dismiss the pair P0-P1 (P0's template pulled by P1's photos): it is not listed again.
    [polluted] = [r for r in _rows(browser, "tr.pair") if ALIAS_SUFFIX not in r.text]
    polluted.find_element(By.CSS_SELECTOR, "button.dismiss").click()
    _flashed(browser, "not listed again")
    assert [ALIAS_SUFFIX in r.text for r in _rows(browser, "tr.pair")] == [True]

    # Move one of P1's photos filed under P0 to P1; remove another.
    def foreign() -> list:
        return [
            r
            for r in _rows(browser, "tr.outlier")
            if _cells(r)[1].startswith(p1 + "/") and _cells(r)[2] == p0
        ]

    count = len(_rows(browser, "tr.outlier"))
    assert len(foreign()) == 5
    foreign()[0].find_element(By.CSS_SELECTOR, "button.move").click()
    _flashed(browser, " moved.")
    assert (len(foreign()), len(_rows(browser, "tr.outlier"))) == (4, count - 1)
    foreign()[0].find_element(By.CSS_SELECTOR, "button.remove").click()
    _flashed(browser, " removed.")
    assert (len(foreign()), len(_rows(browser, "tr.outlier"))) == (3, count - 2)
    _shot(browser, "hygiene-fixed")
