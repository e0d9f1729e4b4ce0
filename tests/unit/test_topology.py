"""The declarative topology: names, arguments and bindings that must not drift."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from warren import topology
from warren.config import Settings
from warren.errors import TopologyError


def _settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def test_work_queue_is_quorum_with_explicit_delivery_limit_and_safe_dead_lettering() -> None:
    topo = topology.build(_settings(namespace="shop", delivery_limit=7), pools=["orders"])
    queues = {q.name: dict(q.arguments) for q in topo.queues}
    assert queues["shop.orders"] == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "shop.dlx",
        "x-dead-letter-routing-key": "shop.orders",
        "x-delivery-limit": 7,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert queues["shop.orders.dlq"] == {"x-queue-type": "quorum"}
    # the suspect queue: the work queue's dead-lettering and limit, one consumer at a time
    assert queues["shop.orders.suspect"] == {**queues["shop.orders"], "x-single-active-consumer": True}


def test_one_delay_queue_per_distinct_backoff_step_routes_back_to_the_work_queue() -> None:
    s = _settings(namespace="shop", retry_max_attempts=6, retry_initial_delay_ms=1000, retry_max_delay_ms=4000)
    topo = topology.build(s, pools=["orders"])
    retry = {q.name: dict(q.arguments) for q in topo.queues if ".retry." in q.name}
    steps = {f"shop.orders.retry.{ms}" for ms in (1000, 2000, 4000)}
    fixed = {f"shop.orders.retry.{ms}" for ms in topology.DELAY_TIERS_MS}  # every pool's delay ladder
    assert set(retry) == steps | fixed
    assert retry["shop.orders.retry.2000"]["x-message-ttl"] == 2000
    assert retry["shop.orders.retry.2000"]["x-dead-letter-exchange"] == ""
    assert retry["shop.orders.retry.2000"]["x-dead-letter-routing-key"] == "shop.orders"


def test_classic_queues_for_old_brokers_carry_no_quorum_only_arguments() -> None:
    topo = topology.build(_settings(queue_type="classic"), pools=["orders"])
    for q in topo.queues:
        assert q.arguments["x-queue-type"] == "classic"
        assert not {"x-delivery-limit", "x-dead-letter-strategy"} & set(q.arguments)


def test_every_exchange_pattern_has_its_place() -> None:
    topo = topology.build(
        _settings(namespace="n"),
        pools=["orders", topology.PoolSpec("shipping", events=("payment.completed",)),
               topology.PoolSpec("analytics", all_events=True)],
        subscriptions=[topology.Subscription("audit", ("order.#",)), topology.Subscription("ledger", fanout=True)],
    )
    kinds = {e.name: e.kind for e in topo.exchanges}
    assert kinds == {"n.tasks": "direct", "n.events": "topic", "n.broadcast": "fanout", "n.dlx": "direct"}
    bindings = {(b.source, b.destination, b.routing_key) for b in topo.bindings}
    assert ("n.tasks", "n.orders", "orders") in bindings
    assert ("n.events", "n.broadcast", "#") in bindings
    assert ("n.events", "n.shipping", "payment.completed") in bindings
    assert ("n.broadcast", "n.analytics", "") in bindings
    assert ("n.broadcast", "n.sub.ledger", "") in bindings
    assert ("n.events", "n.sub.audit", "order.#") in bindings
    assert ("n.dlx", "n.orders.dlq", "n.orders") in bindings


def test_topology_show_json_prints_the_description(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "warren", "topology", "show", "--json", "selftest"],
        env={"PATH": "/usr/bin:/bin", "WARREN_NAMESPACE": "demo"},
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    shown = json.loads(done.stdout)
    assert {"name": "demo.tasks", "kind": "direct"} in shown["exchanges"]
    assert "demo.selftest.dlq" in [q["name"] for q in shown["queues"]]


class _Checker:
    """Records passive checks; ``missing`` names raise as a broker's 404 would."""

    def __init__(self, missing: str = "") -> None:
        self.checked: list[str] = []
        self.missing = missing

    def _check(self, name: str) -> None:
        self.checked.append(name)
        if name == self.missing:
            raise TopologyError(f"checking {name!r}: NOT_FOUND")

    check_exchange = check_queue = _check


def test_verify_checks_every_exchange_then_every_queue_and_declares_nothing() -> None:
    topo = topology.build(_settings(), pools=["payments"])
    checker = _Checker()
    topology.verify(checker, topo)
    assert checker.checked == [e.name for e in topo.exchanges] + [q.name for q in topo.queues]
    with pytest.raises(TopologyError, match=r"warren\.payments\.suspect"):
        topology.verify(_Checker(missing="warren.payments.suspect"), topo)


def test_a_worker_that_may_not_declare_only_checks_and_says_how_to_recover() -> None:
    from warren.testing.selftest import pool
    from warren.worker.runtime import Worker

    assert _settings().declare_topology is True  # declaring stays the default outside the chart
    worker = Worker(pool, _settings(declare_topology=False))
    checker = _Checker(missing="warren.selftest")
    with pytest.raises(TopologyError, match="restart the pod so its topology step runs again"):
        worker._verify_topology(checker)  # type: ignore[arg-type]
    assert "warren.tasks" in checker.checked
