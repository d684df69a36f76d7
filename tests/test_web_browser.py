"""The admin page in a real browser: Debian's Chromium driven by Playwright, against ``fs-dynroute web``.

One administrator's session from sign-in to sign-out, with a screenshot of each page saved under
$DYNROUTE_TEST_OUTPUT (default: test-output/ in the repository) in web/, listed in the README.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs_dynroute.database import open_database
from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from fs_dynroute.models import Route, Rule, database
from tests.fake_inbound import FakeInbound
from tests.serving import CLI, SCRIPT, ServeProcess, free_port

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OUTPUT = Path(os.environ.get("DYNROUTE_TEST_OUTPUT") or Path(__file__).resolve().parents[1] / "test-output") / "web"
START_TIMEOUT = 15.0


class Web:
    """``fs-dynroute web`` on 127.0.0.1:<free port>, logging to a file."""

    def __init__(self, db_url: str, log_path: Path, *extra: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = open(log_path, "w")  # noqa: SIM115 - the process writes it until close()
        self.log_path = log_path
        self.proc = subprocess.Popen([SCRIPT, "web", "--db", db_url, "--listen", self.url[7:], *extra],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.healthy():
            assert self.proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Web, str, str, str]]:
    """A demo database, a read-write and a read-only token, and the web process over them."""
    db_url = f"sqlite:///{tmp_path / 'routes.db'}"
    cli = CLI(db_url)
    cli("initdb", "--demo")
    token = cli("token", "add", "admin").stdout.strip()
    reader = cli("token", "add", "wallboard", "--read-only").stdout.strip()
    web = Web(db_url, tmp_path / "web.log")
    try:
        yield web, db_url, token, reader
    finally:
        web.close()
    assert "Traceback" not in web.log_path.read_text()


@pytest.fixture
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} missing: apt-get install chromium"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def stored(db_url: str) -> tuple[list[tuple], list[tuple]]:
    """Rules and routes as the database holds them now."""
    db = open_database(db_url)
    database.initialize(db)
    with db.connection_context():
        return (list(Rule.select(Rule.name, Rule.enabled).order_by(Rule.name).tuples()),
                list(Route.select(Route.caller_key, Route.destination, Route.notes)
                     .order_by(Route.caller_key).tuples()))


def sign_in(browser: object, web: Web, token: str) -> object:
    page = browser.new_page()
    page.goto(web.url + "/signin")
    page.fill("#token", token)
    page.click("button[type=submit]")
    return page


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_an_administrator_session_from_sign_in_to_sign_out(site: tuple, browser: object) -> None:
    web, db_url, token, _ = site
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))

    # Sign in: a wrong token is refused on the page, the right one opens an HttpOnly, SameSite session.
    page.goto(web.url + "/")
    assert page.url.startswith(web.url + "/signin")
    page.fill("#token", "fsdr_000000000000_wrong")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("#signin-error")
    shot(page, "01-signin")
    page.fill("#token", token)
    page.click("button[type=submit]")
    assert page.url == web.url + "/"
    cookie = next(c for c in context.cookies() if c["name"] == "fs_dynroute_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "Customer Routing" in page.inner_text("#rules")

    # Create a rule: a bad value is shown next to its field, then the corrected form saves.
    page.click("text=+ Add rule")
    page.fill("#name", "Callbacks")
    page.fill("#source", "5550200")
    page.fill("#digits_match", "0")
    page.fill("#no_match_destination", "main-ivr")
    page.check("#delete_after_use")
    page.click("#rule-form button[type=submit]")
    assert "digits: must be 1 to" in page.inner_text('.field-error[data-field="digits_match"]')
    shot(page, "02-rule-form-error")
    assert [r[0] for r in stored(db_url)[0]] == ["Customer Routing"]
    page.fill("#digits_match", "10")
    page.click("#rule-form button[type=submit]")
    assert page.url.endswith("/rules/Callbacks")
    assert ("Callbacks", True) in stored(db_url)[0]

    # Add routes; a note holding markup shows as text and runs nothing.
    for caller, dest, notes in (("+1 555 444 0001", "1001", "<script>alert(1)</script>"),
                                ("+1 555 444 0002", "main-ivr", "second")):
        page.fill("#caller_id", caller)
        page.fill("#destination", dest)
        page.fill("#notes", notes)
        page.click("#route-form button[type=submit]")
    assert page.inner_text('#routes tr[data-key="5554440001"] td:nth-child(3)') == "<script>alert(1)</script>"
    assert "<script>alert" not in page.content().replace("&lt;script&gt;alert", "")
    assert [r[0] for r in stored(db_url)[1]] == ["5551111111", "5552222222", "5554440001", "5554440002"]
    # Search, page, edit and delete.
    page.fill("input[name=q]", "second")
    page.click("form.search button")
    assert [r.get_attribute("data-key") for r in page.query_selector_all("#routes tbody tr")] == ["5554440002"]
    page.goto(web.url + "/rules/Callbacks?limit=1")
    page.click("#next-page")
    assert [r.get_attribute("data-key") for r in page.query_selector_all("#routes tbody tr")] == ["5554440002"]
    page.click('#routes tr[data-key="5554440002"] >> text=Edit')
    assert page.input_value("#caller_id") == "5554440002" and page.input_value("#notes") == "second"
    page.fill("#destination", "1002")
    page.fill("#expires", "7d")
    page.click("#route-form button[type=submit]")
    assert ("5554440002", "1002", "second") in stored(db_url)[1]
    assert page.inner_text('#routes tr[data-key="5554440002"] td:nth-child(4)')  # the expiry shows
    page.click('#routes tr[data-key="5554440002"] button:has-text("Delete")')
    wait_for(lambda: "5554440002" not in [r[0] for r in stored(db_url)[1]])
    assert dialogs == ["Delete the route for 5554440002?"]
    page.fill("#caller_id", "anonymous")
    page.fill("#destination", "1001")
    page.click("#route-form button[type=submit]")
    assert "caller_id:" in page.inner_text('.field-error[data-field="caller_id"]')
    shot(page, "03-routes")

    # Import a CSV with one bad line: that line's error is shown and nothing is imported.
    before = stored(db_url)
    page.fill("textarea[name=csv]", "caller_id,destination,notes\n+15554440003,1001,ok\n+15554440004,nowhere,bad\n"
                                    "+15554440005,1002,ok\n")
    page.click("#import button[type=submit]")
    problems = page.inner_text("#import-problems")
    assert "1 bad line; nothing was imported" in problems and "line 3: destination:" in problems
    assert stored(db_url) == before
    shot(page, "04-import-error")
    page.fill("textarea[name=csv]", "+15554440003,1001,ok\n+15554440005,1002,ok\n")
    page.click("#import button[type=submit]")
    assert "2 routes imported" in page.inner_text("#flash")
    assert [r[0] for r in stored(db_url)[1]][-2:] == ["5554440003", "5554440005"]

    # Toggle Enabled on the rules page: saved at once, without a form button.
    page.click("text=Rules")
    page.click('tr[data-rule="Callbacks"] .switch')
    wait_for(lambda: ("Callbacks", False) in stored(db_url)[0])
    page.reload()
    assert not page.is_checked('tr[data-rule="Callbacks"] input[name=enabled]')
    shot(page, "05-rules")

    # Where would this call go?
    page.click("text=Where would this call go?")
    page.fill("#source", "5550100")
    page.fill("#caller", "+1 (555) 111-1111")
    page.click("#lookup-form button[type=submit]")
    assert "match → 1001 XML default" in page.inner_text("#lookup-answer")
    shot(page, "06-lookup")
    page.click("text=Destinations")
    page.fill("#dname", "vip")
    page.fill("#transfer", "6000 XML ${x}")
    page.click("#destination-form button[type=submit]")
    assert page.inner_text('#destination-form .field-error[data-field="transfer"]').startswith("destination")
    page.fill("#transfer", "6000 XML default")
    page.click("#destination-form button[type=submit]")
    assert "vip\t6000 XML default" in page.inner_text("#destinations")
    shot(page, "08-destinations")

    # A form posted without its CSRF token (another site's form) is refused and changes nothing.
    before = stored(db_url)
    refused = page.request.post(web.url + "/rules/Callbacks/delete", form={})
    assert refused.status == 400 and "CSRF" in refused.text()
    assert stored(db_url) == before

    # Sign out: the session is gone.
    page.click(".signout button")
    assert page.url.startswith(web.url + "/signin")
    page.goto(web.url + "/rules/Callbacks")
    assert page.url.startswith(web.url + "/signin")
    assert dialogs == ["Delete the route for 5554440002?"]  # only the confirmation asked for; no script ran
    context.close()


def test_a_read_only_token_sees_the_page_and_cannot_change_anything(site: tuple, browser: object) -> None:
    web, db_url, _, reader = site
    page = sign_in(browser, web, reader)
    assert page.is_disabled('tr[data-rule="Customer Routing"] input[name=enabled]')
    assert page.locator("text=+ Add rule").count() == 0
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    before = stored(db_url)
    refused = page.request.post(web.url + "/rules/Customer Routing/delete", form={"csrf_token": csrf})
    assert refused.status == 403 and stored(db_url) == before


def test_a_revoked_token_ends_its_page_sessions_at_once(site: tuple, browser: object) -> None:
    web, db_url, token, _ = site
    page = sign_in(browser, web, token)
    assert page.url == web.url + "/"
    CLI(db_url)("token", "revoke", "admin")
    page.goto(web.url + "/rules/Customer Routing")
    assert page.url.startswith(web.url + "/signin")



def test_the_page_says_when_the_installed_dialplan_is_out_of_date_and_installs_it(tmp_path: Path,
                                                                                  browser: object) -> None:
    db_url = f"sqlite:///{tmp_path / 'routes.db'}"
    cli = CLI(db_url)
    cli("initdb", "--demo")
    token = cli("token", "add", "admin").stdout.strip()
    installed = tmp_path / "50_dynroute.xml"
    cli("dialplan", "--install", str(installed))
    with FakeInbound() as switch:
        web = Web(db_url, tmp_path / "web.log", "--dialplan-file", str(installed), "--esl", switch.address)
        try:
            page = sign_in(browser, web, token)
            assert page.locator("#dialplan-stale").count() == 0
            cli("rule", "add", "Night", "--source", "5550200", "--digits", "10", "--nomatch-dest", "1009")
            page.reload()
            assert "The FreeSWITCH dialplan is out of date" in page.inner_text("#dialplan-stale")
            shot(page, "09-dialplan-out-of-date")
            page.click("#dialplan-stale button")
            assert "FreeSWITCH reloadxml: +OK [Success]" in page.inner_text("#flash")
            assert page.locator("#dialplan-stale").count() == 0
            assert installed.read_text() == cli("dialplan").stdout and "dynroute Night" in installed.read_text()
            assert switch.commands == ["auth ClueCon", "api reloadxml", "exit"]
        finally:
            web.close()


def test_a_route_added_in_the_page_routes_the_next_call_and_shows_in_recent_decisions(
        site: tuple, browser: object, tmp_path: Path) -> None:
    web, db_url, token, _ = site
    node = ServeProcess(db_url)
    try:
        plan = Dialplan.recommended(f"127.0.0.1:{node.port}", "5000 XML default")
        page = sign_in(browser, web, token)
        page.click("text=Customer Routing")
        page.fill("#caller_id", "+1 555 444 0009")
        page.fill("#destination", "1042")
        page.fill("#notes", "added in the page")
        page.click("#route-form button[type=submit]")
        saved = time.monotonic()
        while (target := place_call(plan, "+15554440009", "5550100", stuck_after=3.0).target) != "1042 XML default":
            assert time.monotonic() - saved < 2.0, f"the call still went to {target}"
        page.click("text=Recent decisions")

        def shown() -> bool:  # the server writes audit rows in batches, every poll interval
            page.reload()
            return page.locator("#decisions td:has-text('5554440009')").count() > 0

        wait_for(shown)
        assert "match" in page.inner_text("#decisions tbody tr:first-child")
        shot(page, "07-decisions")
    finally:
        node.kill()


def test_named_sources_are_added_used_and_protected_in_the_page(site: tuple, browser: object) -> None:
    web, db_url, token, _ = site
    cli = CLI(db_url)
    page = sign_in(browser, web, token)
    page.on("dialog", lambda d: d.accept())
    page.click("nav >> text=Sources")
    page.fill("#sname", "Main Number")
    page.fill("#numbers", "5550100, 18005550100")
    page.click("#source-form button[type=submit]")
    assert page.inner_text('#sources tr[data-source="Main Number"] td:nth-child(2)') == "18005550100 5550100"
    # A number another source has, or one FreeSWITCH could never send, is refused next to the field.
    page.fill("#sname", "Toll Free")
    page.fill("#numbers", "18005550100")
    page.click("#source-form button[type=submit]")
    assert "number: '18005550100' is a number of source 'Main Number'" in page.inner_text("#source-form .field-error")
    page.fill("#numbers", "1800 555 0101;")
    page.click("#source-form button[type=submit]")
    assert "must be 1-100 of letters, digits" in page.inner_text("#source-form .field-error")
    assert [s["name"] for s in cli.json("source", "list")] == ["Main Number"]

    # The rule form takes the name; the dry run then finds the rule on the toll-free number too.
    page.click("nav >> text=Rules")
    page.click("text=Customer Routing")
    page.click("text=Edit rule")
    assert "Main Number" in page.inner_text("#rule-form")
    page.fill("#source", "Main Number")
    page.click("#rule-form button[type=submit]")
    assert cli.json("rule", "show", "Customer Routing")["source"] == "Main Number"
    page.click("text=Where would this call go?")
    page.fill("#source", "18005550100")
    page.fill("#caller", "+1 (555) 111-1111")
    page.click("#lookup-form button[type=submit]")
    assert "match → 1001 XML default" in page.inner_text("#lookup-answer")

    # Saving the name again replaces its numbers; a source a rule uses cannot be deleted.
    page.click("nav >> text=Sources")
    page.fill("#sname", "Main Number")
    page.fill("#numbers", "5550100 18005550111")
    page.click("#source-form button[type=submit]")
    assert cli.json("source", "show", "Main Number")["numbers"] == ["18005550111", "5550100"]
    assert "Customer Routing" in page.inner_text('#sources tr[data-source="Main Number"] td:nth-child(3)')
    shot(page, "10-sources")
    page.click('#sources tr[data-source="Main Number"] button:has-text("Delete")')
    assert "source 'Main Number' is used by rule 'Customer Routing'" in page.inner_text(".alert.error")
    assert [s["name"] for s in cli.json("source", "list")] == ["Main Number"]
