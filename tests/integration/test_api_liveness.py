"""Liveness under load: with every request handler busy (many concurrent orders waiting on an
inventory that does not answer, as in the finding), ``/healthz`` still answers within a second."""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.support.api import bearer, running_api
from warren.broker import Session

pytestmark = pytest.mark.broker
ORDERS = 120
ORDER = {"customer": {"email": "ada@example.com"}, "items": [{"sku": "sku-tea", "quantity": 1}]}


def test_healthz_answers_within_a_second_while_the_request_pool_is_saturated(broker: Any, tmp_path: Any) -> None:
    with running_api(broker, tmp_path, WARREN_API_STOCK_CHECK_TIMEOUT="3", WARREN_API_CONNECTIONS="64") as (
            api, keys, settings):
        placing = [threading.Thread(target=api.call, args=("POST", "/api/v1/orders", ORDER),
                                    kwargs={"headers": bearer(keys.writer)}, daemon=True) for _ in range(ORDERS)]
        for thread in placing:
            thread.start()
        session = Session.open(settings, name="test-liveness")
        try:  # the handlers are waiting on inventory: its queue fills with their stock checks
            deadline = time.monotonic() + 20
            while session.queue_depth(f"{settings.namespace}.inventory")[0] < 30:
                assert time.monotonic() < deadline, "the orders did not reach the stock check"
                time.sleep(0.05)
        finally:
            session.close()
        took = []
        for _ in range(5):
            started = time.monotonic()
            with urllib.request.urlopen(f"{api.url}/healthz", timeout=5) as answer:
                assert answer.status == 200
            took.append(time.monotonic() - started)
        assert max(took) < 1.0, f"/healthz took {max(took):.2f}s behind the order handlers"
        assert sum(thread.is_alive() for thread in placing) > ORDERS // 2  # it was measured under the load
