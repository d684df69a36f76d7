"""The metric functions the call path calls, and the numbers the server lends at scrape time, as Prometheus reads
them."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from fs_dynroute import metrics


def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_calls_are_counted_by_rule_and_result_with_their_decision_time() -> None:
    before = scraped()
    for result in ("match", "match", "nomatch"):
        metrics.call_decided("Metrics Rule", result, 0.002)
    metrics.consumed("Metrics Rule")
    metrics.refused()
    metrics.database_error()
    after = scraped()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("dynroute_calls_total", rule="Metrics Rule", result="match") == 2
    assert grew("dynroute_calls_total", rule="Metrics Rule", result="nomatch") == 1
    assert grew("dynroute_consumed_total", rule="Metrics Rule") == 1
    assert grew("dynroute_refused_total") == 1 and grew("dynroute_database_errors_total") == 1
    assert grew("dynroute_decision_seconds_count") == 3
    assert grew("dynroute_decision_seconds_bucket", le="0.0025") == 3 and grew("dynroute_decision_seconds_bucket",
                                                                             le="0.001") == 0


def test_the_server_numbers_are_read_when_scraped() -> None:
    state = {"live": 3, "outage": False, "routes": 1000, "refreshed": time.monotonic() - 2.0}
    metrics.watch_server(live=lambda: state["live"], outage=lambda: state["outage"], routes=lambda: state["routes"],
                         last_refresh=lambda: state["refreshed"])
    first = scraped()
    assert (first[("dynroute_sessions_in_flight", ())], first[("dynroute_database_outage", ())],
            first[("dynroute_index_routes", ())]) == (3, 0, 1000)
    assert 2.0 <= first[("dynroute_change_log_lag_seconds", ())] < 60
    state.update(live=0, outage=True, routes=999)
    second = scraped()
    assert (second[("dynroute_sessions_in_flight", ())], second[("dynroute_database_outage", ())],
            second[("dynroute_index_routes", ())]) == (0, 1, 999)
