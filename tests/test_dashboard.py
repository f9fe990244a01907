"""The web dashboard in a real browser (Debian's Chromium through Playwright) against a real
``multibackup server``: sign in, add a destination and test it, create a plan, run it, watch
the run finish, browse the snapshot, restore a file and compare its bytes; plus the error
paths (wrong password, invalid schedule keeps the form) and a 375 px wide phone screen."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import _free_port
from servers_control import ControlServer, control_server  # noqa: F401 (fixture)

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"the dashboard tests need Debian's Chromium at {CHROMIUM} "
                "(apt-get install chromium)", allow_module_level=True)
pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the dashboard tests need the playwright package")

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_MS = 120_000
REPO_PASSWORD = "repository-password-for-the-dashboard-test"
# Opening a repository derives its key (memory-hard): pages reading snapshots take seconds on
# a busy machine, more than expect()'s default 5 s.
sync_api.expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS,
                                      headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """One browser tab on the dashboard that records script errors (none are allowed)."""

    def __init__(self, browser: Any, server: ControlServer, width: int = 1280,
                 height: int = 900) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": width, "height": height},
                                           accept_downloads=True)
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        # Failed API requests (401 before sign-in, the 422s the tests provoke) are logged
        # by the browser as "Failed to load resource"; anything else is a script problem.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(f"console: {msg.text}")

    def open(self, hash_: str = "") -> Any:
        return self.page.goto(self.server.url + "/" + hash_)

    def go(self, hash_: str) -> None:
        self.page.evaluate("h => { window.location.hash = h; }", hash_)

    def sign_in(self, password: str | None = None) -> None:
        page = self.page
        page.get_by_test_id("login-email").fill(self.server.email)
        page.get_by_test_id("login-password").fill(password or self.server.password)
        page.get_by_test_id("login-submit").click()

    def enter(self) -> None:
        """Open the dashboard, sign in and wait for the overview."""
        self.open()
        self.sign_in()
        sync_api.expect(self.page.get_by_role("heading", name="Overview")).to_be_visible()

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def tab(browser: Any, control_server: ControlServer) -> Iterator[Page]:  # noqa: F811
    page = Page(browser, control_server)
    try:
        yield page
    finally:
        page.close()


def add_destination(tab: Page, name: str, location: Path) -> None:
    page = tab.page
    tab.go("#/destinations/new")
    form = page.get_by_test_id("destination-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Location").fill(str(location))
    page.get_by_test_id("destination-test").click()
    result = page.get_by_test_id("test-result")
    sync_api.expect(result).to_contain_text("Connected")
    assert result.get_attribute("data-ok") == "true"
    page.get_by_test_id("save").click()
    sync_api.expect(page.locator(f"[data-testid=destination-row][data-name='{name}']")).to_be_visible()


def make_site(root: Path) -> dict[str, bytes]:
    files = {
        "index.html": b"<!doctype html><title>site</title>\n" * 40,
        "sub/data.bin": os.urandom(300 * 1024) + bytes(range(256)) * 64,
        "sub/notes.txt": "notes \u00e9\u00e8 \u2713\n".encode() * 100,
        "sub/deeper/more.txt": b"more\n" * 10,
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_backup_browse_and_restore_a_file(tab: Page, tmp_path: Path) -> None:
    page = tab.page
    src = tmp_path / "site"
    files = make_site(src)
    repo = tmp_path / "repo"
    repo.mkdir()

    response = tab.open()
    csp = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("x-frame-options") == "DENY"
    assert response.headers.get("referrer-policy") == "same-origin"
    tab.sign_in()
    sync_api.expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    sync_api.expect(page.get_by_test_id("whoami")).to_contain_text(tab.server.email)

    add_destination(tab, "disk", repo)
    health = page.locator("[data-testid=destination-row][data-name='disk']")
    sync_api.expect(health.get_by_test_id("destination-health")).to_contain_text("Never run")

    # a source: the site's SQLite database, tested before it is saved
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(500)])
    tab.go("#/sources/new")
    form = page.get_by_test_id("source-form")
    form.get_by_test_id("field-name").fill("appdb")
    form.get_by_test_id("field-url").fill(f"sqlite://{db}")
    page.get_by_test_id("source-test").click()
    sync_api.expect(page.get_by_test_id("test-result")).to_have_attribute("data-ok", "true")
    page.get_by_test_id("save").click()
    sync_api.expect(page.locator("[data-testid=source-row][data-name='appdb']")).to_be_visible()

    # a plan backing up the folder to the destination
    tab.go("#/plans/new")
    form = page.get_by_test_id("plan-form")
    form.get_by_label("Name").fill("site")
    form.get_by_label("Paths and URLs").fill(str(src))
    page.get_by_test_id("plan-sources").get_by_label("appdb").check()
    page.get_by_test_id("plan-destinations").get_by_label("disk").check()
    form.get_by_label("Schedule", exact=True).fill("daily 02:30")
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_label("Repository password").fill(REPO_PASSWORD)
    page.get_by_test_id("save").click()
    settings = page.get_by_test_id("plan-settings")
    sync_api.expect(settings).to_contain_text("daily 02:30")
    sync_api.expect(settings).to_contain_text("Europe/Berlin")
    sync_api.expect(settings).to_contain_text(str(src))

    # run it and watch the run page until it is done
    page.get_by_test_id("run-now").click()
    status = page.get_by_test_id("run-status")
    sync_api.expect(status).to_be_visible()
    sync_api.expect(status).to_have_attribute("data-status", "ok", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.get_by_test_id("cancel-run")).to_be_hidden()
    sync_api.expect(page.get_by_test_id("run-log")).to_contain_text("finished: ok")
    dest_row = page.locator("[data-testid=run-destination][data-name='disk']")
    sync_api.expect(dest_row).to_contain_text("OK")

    sync_api.expect(page.get_by_test_id("run-log")).to_contain_text("backing up appdb")

    # the overview shows the plan's result
    tab.go("#/")
    row = page.locator("[data-testid=plan-row][data-plan-name='site']")
    sync_api.expect(row.get_by_test_id("plan-status")).to_have_attribute("data-status", "ok")

    # the plan page: history, charts and the snapshot
    row.get_by_test_id("plan-link").click()
    sync_api.expect(page.get_by_test_id("run-history").get_by_test_id("run-row")).to_have_count(1)
    sync_api.expect(page.get_by_test_id("chart-stored")).to_be_visible()
    sync_api.expect(page.get_by_test_id("chart-duration")).to_be_visible()
    assert page.locator("[data-testid=chart-stored] circle").count() == 1
    sync_api.expect(page.get_by_test_id("snapshot-row")).to_have_count(2)  # folder + database
    page.locator("[data-testid=snapshot-row]", has_text=str(src)).get_by_test_id(
        "snapshot-link").click()

    # the browser opens on the backed-up folder; go into sub/
    entry = page.locator("[data-testid=snapshot-entry][data-name='sub']")
    sync_api.expect(entry).to_have_attribute("data-type", "dir")
    sync_api.expect(page.locator("[data-testid=snapshot-entry][data-name='index.html']")).to_be_visible()
    entry.get_by_test_id("entry-open").click()
    sync_api.expect(page.get_by_test_id("breadcrumbs")).to_contain_text("sub")
    data_row = page.locator("[data-testid=snapshot-entry][data-name='data.bin']")
    sync_api.expect(data_row).to_have_attribute("data-type", "file")
    sync_api.expect(page.locator("[data-testid=snapshot-entry][data-name='deeper']")).to_be_visible()

    # the download link gives the file's bytes
    href = data_row.get_by_test_id("download-link").get_attribute("href")
    assert href and "download?path=" in href
    got = page.request.get(tab.server.url + href)
    assert got.ok and got.body() == files["sub/data.bin"]

    # restore that one file into a fresh folder on the server
    data_row.get_by_test_id("entry-select").check()
    sync_api.expect(page.get_by_test_id("restore-selection")).to_contain_text(str(src / "sub" / "data.bin"))
    target = tmp_path / "restored"
    page.get_by_test_id("restore-target").fill(str(target))
    page.get_by_test_id("restore-button").click()
    status = page.get_by_test_id("run-status")
    sync_api.expect(status).to_have_attribute("data-status", "ok", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Restore")
    restored = target / str(src).lstrip("/") / "sub" / "data.bin"
    assert restored.read_bytes() == files["sub/data.bin"]
    assert not (target / str(src).lstrip("/") / "sub" / "notes.txt").exists()
    assert REPO_PASSWORD not in page.content()


def test_wrong_password_shows_the_error(tab: Page) -> None:
    page = tab.page
    tab.open()
    tab.sign_in(password="not-the-password")
    error = page.get_by_test_id("login-error")
    sync_api.expect(error).to_contain_text("wrong email or password")
    sync_api.expect(error).to_have_attribute("role", "alert")
    # the email stays; the right password then gets in
    assert page.get_by_test_id("login-email").input_value() == tab.server.email
    tab.sign_in()
    sync_api.expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_invalid_schedule_shows_the_field_error_and_keeps_the_form(tab: Page,
                                                                   tmp_path: Path) -> None:
    page = tab.page
    (tmp_path / "repo").mkdir()
    (tmp_path / "src").mkdir()
    tab.enter()
    add_destination(tab, "disk", tmp_path / "repo")

    tab.go("#/plans/new")
    form = page.get_by_test_id("plan-form")
    form.get_by_label("Name").fill("nightly")
    form.get_by_label("Paths and URLs").fill(str(tmp_path / "src"))
    page.get_by_test_id("plan-destinations").get_by_label("disk").check()
    schedule = form.get_by_label("Schedule", exact=True)
    schedule.fill("at 99:99 every blue moon")
    form.get_by_test_id("field-keep-daily").fill("3")
    form.get_by_label("Repository password").fill(REPO_PASSWORD)
    page.get_by_test_id("save").click()

    field = page.locator(".field", has=page.get_by_test_id("field-schedule"))
    error = field.locator(".field-error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).not_to_be_empty()
    sync_api.expect(schedule).to_have_attribute("aria-invalid", "true")
    sync_api.expect(page.get_by_test_id("form-alert")).to_be_visible()
    # nothing typed is lost
    assert form.get_by_label("Name").input_value() == "nightly"
    assert form.get_by_label("Paths and URLs").input_value() == str(tmp_path / "src")
    assert schedule.input_value() == "at 99:99 every blue moon"
    assert form.get_by_test_id("field-keep-daily").input_value() == "3"
    assert form.get_by_label("Repository password").input_value() == REPO_PASSWORD
    assert page.get_by_test_id("plan-destinations").get_by_label("disk").is_checked()
    assert "#/plans/new" in page.url

    # fixing the schedule saves the plan
    schedule.fill("weekly mon 03:00")
    page.get_by_test_id("save").click()
    sync_api.expect(page.get_by_test_id("plan-settings")).to_contain_text("weekly mon 03:00")

    # deleting the destination the plan uses is refused with the reason; nothing is lost
    tab.go("#/destinations")
    row = page.locator("[data-testid=destination-row][data-name='disk']")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete disk").click()
    toast = page.locator(".toast-error")
    sync_api.expect(toast).to_contain_text("used by plan 'nightly'")
    tab.go("#/")
    tab.go("#/destinations")
    sync_api.expect(row).to_be_visible()

    # "Test connection" against a cloud that does not answer shows its one-line error
    tab.go("#/destinations/new")
    form = page.get_by_test_id("destination-form")
    form.get_by_label("Name").fill("dead-cloud")
    form.get_by_label("Location").fill("s3://bucket/backups")
    form.get_by_test_id("field-more").fill(f"endpoint = http://127.0.0.1:{_free_port()}")
    page.get_by_test_id("destination-test").click()
    result = page.get_by_test_id("test-result")
    sync_api.expect(result).to_have_attribute("data-ok", "false")
    sync_api.expect(result).to_contain_text("cannot reach the server")


def test_phone_width_navigation(browser: Any, control_server: ControlServer) -> None:  # noqa: F811
    tab = Page(browser, control_server, width=375, height=740)
    try:
        page = tab.page
        tab.enter()
        nav = page.get_by_role("navigation", name="Main")
        destinations = nav.get_by_role("link", name="Destinations")
        toggle = page.get_by_test_id("nav-toggle")
        sync_api.expect(destinations).to_be_hidden()
        sync_api.expect(toggle).to_have_attribute("aria-expanded", "false")
        toggle.click()
        sync_api.expect(toggle).to_have_attribute("aria-expanded", "true")
        destinations.click()
        sync_api.expect(page.get_by_role("heading", name="Destinations", level=1)).to_be_visible()
        sync_api.expect(destinations).to_be_hidden()  # the menu closes after choosing
        current = page.locator("#primary-nav a[aria-current=page]")
        sync_api.expect(current).to_have_text("Destinations")
        # keyboard: the menu opens with Enter and every page fits the screen's width
        toggle.focus()
        page.keyboard.press("Enter")
        sync_api.expect(nav.get_by_role("link", name="Settings")).to_be_visible()
        nav.get_by_role("link", name="Settings").click()
        sync_api.expect(page.get_by_test_id("sign-out")).to_be_visible()
        for hash_ in ("#/", "#/destinations/new", "#/plans/new", "#/alerts", "#/settings"):
            tab.go(hash_)
            page.wait_for_load_state("networkidle")
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, hash_
        page.get_by_test_id("sign-out").click()
        sync_api.expect(page.get_by_test_id("login-form")).to_be_visible()
    finally:
        tab.close()


def test_another_organisation_sees_nothing_in_the_pages(browser: Any, tmp_path: Path,
                                                        control_server: ControlServer,  # noqa: F811
                                                        ) -> None:
    """A user of organisation B signs in to the dashboard: A's plan, run and destination
    are absent from every list, and opening their pages by id says "Not found"."""
    from test_server_process import Api

    api = Api(control_server)
    site = tmp_path / "a-site"
    make_site(site)
    api.call("POST", "/destinations", {"name": "a-disk",
                                       "config": {"location": str(tmp_path / "repo-a")}})
    plan = api.call("POST", "/plans", {"name": "a-secret-plan", "sources": [str(site)],
                                       "destinations": ["a-disk"], "password": REPO_PASSWORD})
    run = api.wait(api.call("POST", f"/plans/{plan['id']}/run")["id"])
    assert run["status"] == "ok"
    dest_id = api.call("GET", "/destinations")[0]["id"]
    org = api.call("POST", "/organisations", {"name": "b-corp"})
    api.call("POST", "/users", {"email": "bea@b.test", "password": "bea-password-123",
                                "role": "admin", "organisation_id": org["id"]})
    tab = Page(browser, control_server)
    try:
        page = tab.page
        tab.open()
        page.get_by_test_id("login-email").fill("bea@b.test")
        page.get_by_test_id("login-password").fill("bea-password-123")
        page.get_by_test_id("login-submit").click()
        sync_api.expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        sync_api.expect(page.get_by_text("b-corp")).to_be_visible()
        sync_api.expect(page.get_by_test_id("plan-row")).to_have_count(0)
        for hash_ in ("#/", "#/destinations", "#/runs"):
            tab.go(hash_)
            page.wait_for_load_state("networkidle")
            body = page.locator("main").inner_text()
            assert "a-secret-plan" not in body and "a-disk" not in body, hash_
        for hash_ in (f"#/plans/{plan['id']}", f"#/runs/{run['id']}",
                      f"#/destinations/{dest_id}/edit",
                      f"#/plans/{plan['id']}/snapshots/{run['snapshot']}"):
            tab.go(hash_)
            error = page.get_by_test_id("page-error")
            sync_api.expect(error).to_be_visible()
            sync_api.expect(page.locator("main")).to_contain_text("Not found")
            assert "a-secret-plan" not in page.locator("main").inner_text(), hash_
    finally:
        tab.context.close()
    # console 404s are expected here; no script error may have happened
    assert not [e for e in tab.errors if "404" not in e], tab.errors


def test_edit_an_alert_keeps_its_stored_url(tab: Page) -> None:
    page = tab.page
    tab.enter()
    tab.go("#/alerts")
    form = page.get_by_test_id("alert-form")
    form.get_by_test_id("field-name").fill("ops")
    form.get_by_test_id("field-url").fill("json://hooks.example.test/multibackup?token=s3cr3t-tok")
    page.get_by_test_id("save").click()
    row = page.locator("[data-testid=alert-row][data-name='ops']")
    sync_api.expect(row).to_contain_text("Sends: failures")
    assert "s3cr3t-tok" not in row.inner_text()  # shown masked
    row.get_by_test_id("alert-edit").click()
    form = page.get_by_test_id("alert-form")
    sync_api.expect(form.get_by_test_id("field-name")).to_have_value("ops")
    form.get_by_test_id("field-on-success").check()
    page.get_by_test_id("save").click()
    row = page.locator("[data-testid=alert-row][data-name='ops']")
    sync_api.expect(row).to_contain_text("Sends: failures, successes")
    sync_api.expect(row).to_contain_text("hooks.example.test")
    assert page.locator("[data-testid=alert-row]").count() == 1


def test_add_run_and_edit_a_migration(tab: Page, tmp_path: Path) -> None:
    from test_server_process import Api

    api = Api(tab.server)
    for name in ("old-cloud", "new-cloud"):
        (tmp_path / name).mkdir()
        api.call("POST", "/destinations", {"name": name,
                                           "config": {"location": str(tmp_path / name)}})
    (tmp_path / "old-cloud" / "photo.jpg").write_bytes(os.urandom(20_000))
    # FTP can be a migration's end though it holds no repository; other sources cannot
    api.call("POST", "/sources", {"name": "oldhost",
                                  "config": {"url": "ftp://web@ftp.example.test/www"}})
    api.call("POST", "/sources", {"name": "shell",
                                  "config": {"url": "sftp://web@ssh.example.test/www"}})
    page = tab.page
    tab.enter()
    tab.go("#/migrations")
    form = page.get_by_test_id("migration-form")
    options = form.get_by_test_id("field-source").locator("option")
    sync_api.expect(options.filter(has_text="new-cloud")).to_have_count(1)
    offered = options.all_inner_texts()
    assert any(o.startswith("oldhost") and "FTP" in o for o in offered), offered
    assert not any(o.startswith("shell") for o in offered), offered
    form.get_by_test_id("field-name").fill("move")
    form.get_by_test_id("field-source").select_option("old-cloud")
    form.get_by_test_id("field-destination").select_option("new-cloud")
    form.get_by_test_id("field-transfers").fill("3")
    page.get_by_test_id("save").click()
    row = page.locator("[data-testid=migration-row][data-name='move']")
    sync_api.expect(row).to_contain_text("old-cloud → new-cloud")
    row.get_by_role("button", name="Run migration move now").click()
    page.get_by_test_id("toast-run-link").click()
    status = page.get_by_test_id("run-status")
    sync_api.expect(status).to_have_attribute("data-status", "ok", timeout=RUN_TIMEOUT_MS)
    assert (tmp_path / "new-cloud" / "photo.jpg").read_bytes() == \
        (tmp_path / "old-cloud" / "photo.jpg").read_bytes()
    tab.go("#/migrations")
    row = page.locator("[data-testid=migration-row][data-name='move']")
    row.get_by_test_id("migration-edit").click()
    form = page.get_by_test_id("migration-form")
    sync_api.expect(form.get_by_test_id("field-transfers")).to_have_value("3")
    form.get_by_test_id("field-schedule").fill("daily 04:00")
    page.get_by_test_id("save").click()
    sync_api.expect(row).to_contain_text("daily 04:00")
    saved = api.call("GET", "/migrations")[0]
    assert saved["schedule"] == "daily 04:00" and saved["options"]["transfers"] == 3
