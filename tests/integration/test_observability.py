"""Metrics scraped over HTTP from a real worker and the real API, and the worker's JSON log lines."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.database import fresh_sqlite_url
from tests.support.docker import free_ports
from warren.logs import FIELDS
from warren_shop.local import LocalApi

pytestmark = pytest.mark.broker
CHATTY = "tests.support.pools:chatty"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(read: Callable[[], float], expected: float, *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (got := read()) != expected:
        assert time.monotonic() < deadline, f"expected {expected}, still {got} after {timeout}s"
        time.sleep(0.05)


def test_a_worker_serves_its_counters_and_logs_json_lines(rig) -> None:
    (port,) = free_ports(1)
    rig.apply_topology(CHATTY)
    worker = rig.worker(pool=CHATTY, WARREN_METRICS_PORT=str(port), WARREN_LOG_FORMAT="json",
                        WARREN_RETRY_MAX_ATTEMPTS="2")
    first = [rig.producer.publish("chatty", "say", {"text": f"hello {n}"}, correlation_id="c-42") for n in range(3)]
    done = {"pool": "chatty", "task": "say", "outcome": "completed"}
    eventually(lambda: value(scrape(port), "warren_tasks_total", **done), 3)

    samples = scrape(port)
    assert value(samples, "warren_worker_consuming", pool="chatty") == 1
    assert value(samples, "warren_task_duration_seconds_count", pool="chatty", task="say") == 3
    assert ("warren_tasks_in_flight", frozenset({("pool", "chatty")})) in samples
    assert value(samples, "warren_task_wait_seconds", pool="chatty") < 60

    failing = rig.producer.publish("chatty", "say", {"text": "no", "fail": True})
    rig.producer.publish("chatty", "shout", {})  # a type the pool does not know
    for _ in range(2):
        rig.producer.publish("chatty", "say", {"text": "more"})
    eventually(lambda: value(scrape(port), "warren_tasks_total", **done), 5)  # the counter moved
    eventually(lambda: value(scrape(port), "warren_dead_letters_total", pool="chatty", task="say",
                             reason="retries_exhausted"), 1)
    samples = scrape(port)
    assert value(samples, "warren_retries_total", pool="chatty", task="say", error_class="RuntimeError") == 1
    assert value(samples, "warren_dead_letters_total", pool="chatty", task="unknown", reason="unknown_task") == 1
    assert value(samples, "warren_publish_confirm_seconds_count") >= 3  # the retry and the two dead letters
    assert value(samples, "warren_reconnects_total", pool="chatty") == 0

    lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]  # every line is JSON
    assert lines and all(set(FIELDS) <= set(line) for line in lines)
    settled = [line for line in lines if line["message_id"] == first[0] and line["logger"] == "warren.worker"]
    assert [(s["pool"], s["task"], s["attempt"], s["outcome"], s["correlation_id"]) for s in settled] == [
        ("chatty", "say", 1, "completed", "c-42")]
    assert isinstance(settled[0]["duration_ms"], float)
    (own,) = [line for line in lines if line["logger"] == "warren.task" and line["message_id"] == first[0]]
    assert own["message"] == "saying hello 0"
    assert (own["pool"], own["task"], own["attempt"], own["correlation_id"], own["outcome"]) == (
        "chatty", "say", 1, "c-42", "running")
    retried = [line for line in lines if line["message_id"] == failing and line["logger"] == "warren.worker"]
    assert [(r["attempt"], r["outcome"]) for r in retried] == [(1, "retry"), (2, "dead-lettered")]


def test_the_api_counts_requests_by_route_and_status(rig, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    rig.apply_topology()  # the API is ready once the tasks exchange exists
    database = fresh_sqlite_url(tmp_path)
    api = LocalApi({**rig.env, "WARREN_METRICS_PORT": str(port), "WARREN_SHOP_DATABASE_URL": database},
                   tmp_path).wait_ready()
    try:
        for _ in range(3):
            assert api.call("GET", "/healthz")[0] == 200
        assert api.call("POST", "/api/v1/orders", {"items": []})[0] == 422
        assert api.call("GET", "/api/v1/admin/dlq")[0] == 200  # LocalApi's key has the admin scope
        assert api.call("GET", "/no/such/page")[0] == 404
        samples = scrape(port)
        assert value(samples, "warren_api_requests_total", route="/healthz", method="GET", status="200") == 3
        assert value(samples, "warren_api_requests_total", route="/api/v1/orders", method="POST", status="422") == 1
        assert value(samples, "warren_api_requests_total", route="/api/v1/admin/dlq", method="GET", status="200") == 1
        assert value(samples, "warren_api_requests_total", route="unmatched", method="GET", status="404") == 1
        assert value(samples, "warren_api_request_duration_seconds_count", route="/healthz", method="GET") == 3
        assert value(samples, "warren_publish_confirm_seconds_count") == 0  # nothing published yet
        assert api.call("GET", "/healthz")[0] == 200
        assert value(scrape(port), "warren_api_requests_total", route="/healthz", method="GET", status="200") == 4
    finally:
        api.stop()
