"""``serve --web`` and ``serve --metrics``: the page, the API and /metrics inside the serving process, answering
while calls route; and the call path's counters, moved by real calls through the fake FreeSWITCH."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

import gevent
import gevent.pool
import peewee as pw
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fs_dynroute import demo, tokens
from fs_dynroute.config import ConfigError, ServeConfig
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.service import Service
from tests.backends import BACKENDS, DatabaseOutage
from tests.serving import CLI, NO_MATCH, ServeProcess, dialplan_for, free_port, running_server, wait_until

ANY_PORT = ("127.0.0.1", 0)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def request(url: str, *, method: str = "GET", token: str | None = None, body: object = None) -> tuple[int, str]:
    """An HTTP request from a worker thread, so the server on this process's event loop keeps running."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"

    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method),
                                        timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
    return gevent.get_hub().threadpool.spawn(fetch).get()


def base(service: Service, name: str) -> str:
    return "http://127.0.0.1:%d" % dict(service.pages)[name].address[1]


def scrape(service: Service) -> Samples:
    status, text = request(base(service, "metrics") + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@contextmanager
def serving_pages(db_url: str, **settings: object) -> Iterator[Service]:
    with running_server(db_url, web=ANY_PORT, metrics=ANY_PORT, **settings) as service:
        yield service


def test_the_page_the_api_and_metrics_answer_inside_serve_while_calls_route(demo_db: str) -> None:
    with serving_pages(demo_db) as service:
        plan = dialplan_for(service)
        calls = gevent.pool.Pool(10).map_async(lambda _: place_call(plan, "+15551111111", "5550100"), range(40))
        answers = {path: request(base(service, name) + path)
                   for name, path in (("metrics", "/health"), ("metrics", "/metrics"), ("web", "/health"),
                                      ("web", "/api/openapi.json"))}
        outcomes = calls.get(timeout=30)
    assert {path: status for path, (status, _) in answers.items()} == dict.fromkeys(answers, 200)
    assert json.loads(answers["/api/openapi.json"][1])["openapi"].startswith("3.")
    assert "dynroute_index_routes 2.0" in answers["/metrics"][1]
    assert [c.target for c in outcomes] == ["1001 XML default"] * 40


def test_the_pages_metrics_show_the_serving_process_without_metrics_of_its_own(demo_db: str) -> None:
    with running_server(demo_db, web=ANY_PORT) as service:
        status, text = request(base(service, "web") + "/metrics")
    assert status == 200
    assert "dynroute_index_routes 2.0" in text and "dynroute_database_outage 0.0" in text


def test_real_calls_move_the_counters_on_serve_metrics(db: pw.Database, demo_db: str) -> None:
    token = tokens.add("crm")
    with serving_pages(demo_db, max_sessions=1, decision_timeout=1.0) as service:
        plan = dialplan_for(service)
        before = scrape(service)
        assert place_call(plan, "+15551111111", "5550100").target == "1001 XML default"
        assert place_call(plan, "+15559999999", "5550100").target == NO_MATCH

        # Delete After Use switched on through serve's own API: the next call for a route consumes it.
        status, _ = request(f"{base(service, 'web')}/api/rules/{quote(demo.RULE)}", method="PATCH", token=token,
                            body={"delete_after_use": True})
        assert status == 200
        wait_until(lambda: service.store.rule_for(name=demo.RULE).delete_after_use, what="the change to reach serve")
        assert place_call(plan, "15552222222", "5550100").target == "1002 XML default"
        assert place_call(plan, "15552222222", "5550100").target == NO_MATCH  # consumed: now unknown

        # One call holds the only session; the next is refused at once and keeps the dialplan default.
        held = gevent.spawn(place_call, plan, "+15551111111", "5550100", behaviour="stall", stuck_after=3.0)
        wait_until(lambda: service.server.live == 1, what="the stalled call to hold the session")
        assert place_call(plan, "+15551111111", "5550100").target == NO_MATCH
        held.join(timeout=5)
        after = scrape(service)

    rule = demo.RULE
    assert grown(before, after, "dynroute_calls_total", rule=rule, result="match") == 2
    assert grown(before, after, "dynroute_calls_total", rule=rule, result="nomatch") == 2
    assert grown(before, after, "dynroute_consumed_total", rule=rule) == 1
    assert grown(before, after, "dynroute_refused_total") == 1
    assert grown(before, after, "dynroute_decision_seconds_count") == 4
    assert grown(before, after, "dynroute_database_errors_total") == 0


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)  # a server to stop
def test_a_database_outage_counts_database_errors(db: pw.Database, db_url: str) -> None:
    demo.load()
    switch = DatabaseOutage(db_url)
    try:
        with serving_pages(switch.url, stale_after=1.0) as service:
            before = scrape(service)
            switch.down()
            wait_until(lambda: grown(before, scrape(service), "dynroute_database_errors_total") >= 2, timeout=10,
                       what="failed reads of the change log to be counted")
            assert scrape(service)[("dynroute_database_outage", ())] == 1.0
            switch.up()
    finally:
        switch.close()


def test_a_taken_web_port_is_refused_naming_the_option_and_nothing_keeps_running(demo_db: str) -> None:
    with running_server(demo_db, web=ANY_PORT) as first:
        taken = dict(first.pages)["web"].address
        service = Service(ServeConfig(db=demo_db, listen=ANY_PORT, metrics=ANY_PORT, web=taken))
        with pytest.raises(ConfigError, match=r"^--web \(DYNROUTE_WEB\) 127\.0\.0\.1:\d+: .*in use"):
            service.start()
        assert all(page.server.closed for _, page in service.pages)  # --metrics had started: stopped again
        assert not service.server.server.started


def test_one_port_for_two_of_listen_web_and_metrics_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"^--metrics \(DYNROUTE_METRICS\) 127\.0\.0\.1:8085 is where "
                                          r"--web \(DYNROUTE_WEB\) listens"):
        ServeConfig.load({"web": "127.0.0.1:8085"}, {"DYNROUTE_METRICS": "127.0.0.1:8085"})
    with pytest.raises(ConfigError, match=r"^--web \(DYNROUTE_WEB\) 127\.0\.0\.1:8084 is where --listen"):
        ServeConfig(web=("127.0.0.1", 8084))


def page_path(opener: urllib.request.OpenerDirector, url: str, form: dict[str, str] | None = None) -> tuple[str, str]:
    """(the path the browser ends on after redirects, the page), with ``opener``'s cookies, from a worker thread."""
    def fetch() -> tuple[str, str]:
        with opener.open(url, urlencode(form).encode() if form else None, timeout=10) as answer:
            return urllib.parse.urlsplit(answer.url).path, answer.read().decode()
    return gevent.get_hub().threadpool.spawn(fetch).get()


def test_a_web_secret_file_keeps_the_page_signed_in_across_a_restart(db: pw.Database, demo_db: str,
                                                                       tmp_path: Path) -> None:
    key = tmp_path / "web.key"
    key.write_text(secrets.token_hex(32) + "\n")
    token = tokens.add("admin")
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with running_server(demo_db, web=ANY_PORT, web_secret_file=str(key)) as first:
        _, page = page_path(browser, base(first, "web") + "/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        assert page_path(browser, base(first, "web") + "/signin", {"csrf_token": csrf, "token": token})[0] == "/"
    with running_server(demo_db, web=ANY_PORT, web_secret_file=str(key)) as restarted:
        path, page = page_path(browser, base(restarted, "web") + "/")
        assert path == "/" and "Customer Routing" in page
    with running_server(demo_db, web=ANY_PORT) as without_the_file:  # a key of its own: signed out
        assert page_path(browser, base(without_the_file, "web") + "/")[0] == "/signin"


def test_an_unusable_web_secret_file_is_refused_naming_the_option(demo_db: str, tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("secret\n")
    for path, why in ((short, "at least 32 characters"), (tmp_path / "missing.key", "No such file")):
        with pytest.raises(ConfigError, match=rf"^--web-secret-file \(DYNROUTE_WEB_SECRET_FILE\): .*{why}"):
            Service(ServeConfig(db=demo_db, listen=ANY_PORT, web=ANY_PORT, web_secret_file=str(path)))
    with pytest.raises(ConfigError, match=r"^--web-secret-file \(DYNROUTE_WEB_SECRET_FILE\) is for --web"):
        ServeConfig(web_secret_file=str(short))
    cli = CLI(demo_db)  # `web --secret-file`: the same rule, the CLI's one line
    message = cli.refused("web", "--secret-file", str(short))
    assert message.startswith("fs-dynroute: error: secret-file: ") and "at least 32 characters" in message
    assert "missing.key: No such file" in cli.refused("web", "--secret-file", str(tmp_path / "missing.key"))


def test_serve_takes_web_and_metrics_from_the_command_line_and_the_environment(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'routes.db'}"
    cli = CLI(db_url)
    cli("initdb", "--demo")
    web, metrics = free_port(), free_port()
    server = ServeProcess(db_url, "--web", f"127.0.0.1:{web}",
                          env={**os.environ, "DYNROUTE_METRICS": f"127.0.0.1:{metrics}"})
    try:
        assert f"web page and API on http://127.0.0.1:{web}/" in server.text()
        assert f"/metrics and /health on http://127.0.0.1:{metrics}/" in server.text()
        assert request(f"http://127.0.0.1:{web}/health")[0] == 200
        assert request(f"http://127.0.0.1:{metrics}/health")[0] == 200
    finally:
        assert server.stop()[0] == 0
    assert "Traceback" not in server.text()
    assert "--web: expected host:port" in cli("serve", "--web", "8085", ok=False).stderr
