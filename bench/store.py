"""The shop's store, measured: ``python -m bench.store [--orders N] [--quick]`` from the repo root.

Two numbers per database, SQLite (one file, as ``make demo`` uses) and PostgreSQL (a private
cluster with fsync on, as production runs it):

- **round trips per order**: one order run through every role in this process, without a broker
  (``warren.testing.run_task`` for each message, its events routed to the pools that subscribe to
  them, as the topology would), counting the statements and commits each role sends to the
  database. Exact and repeatable: it is a property of the code.
- **orders per second through the whole pipeline**: a private RabbitMQ node, every role as a
  worker process (two payments workers), the API as a process; N orders POSTed by four client
  threads, timed from the first POST until the last ``order.completed`` (shipped and e-mailed)
  or ``order.failed``. Simulated work is zero: this measures Warren, the broker and the database.

Prints a table and writes ``bench/results/store.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
INSTANT = {  # no simulated work, no simulated faults
    "WARREN_SHOP_PAYMENT_MIN_MS": "0", "WARREN_SHOP_PAYMENT_MAX_MS": "0", "WARREN_SHOP_EMAIL_MS": "0",
    "WARREN_SHOP_SMS_MS": "0", "WARREN_SHOP_SHIPPING_MS": "0", "WARREN_LOG_LEVEL": "WARNING",
}
BASKET = (("sku-apple", 2), ("sku-tea", 1))


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return match(p[1:], k) or (bool(k) and match(p, k[1:]))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def round_trips_per_order(url: str) -> dict[str, int]:
    """One order through every role in this process: round trips to the database, per role."""
    os.environ.update({**INSTANT, "WARREN_SHOP_DATABASE_URL": url})
    from warren.config import Settings
    from warren.testing import run_task
    from warren.topology import Names
    from warren_shop import pipeline
    from warren_shop.roles import common
    from warren_shop.settings import shop_settings
    from warren_shop.store import Cause, database, orders
    from warren_shop.store.engine import process_name

    shop_settings.cache_clear()
    database.cache_clear()
    common.runtime.cache_clear()
    store = database()
    settings = Settings(_env_file=None)
    names = Names(settings.namespace)
    counts: Counter[str] = Counter()
    order_id = secrets.token_hex(8)
    customer = {"email": "ada@example.com", "phone": "+44 20 7946 0000"}
    items = [{"sku": sku, "quantity": q} for sku, q in BASKET]

    before = store.round_trips
    accepted = Cause.request(order_id, worker=process_name())
    store.transaction(lambda conn: orders.create(conn, order_id=order_id, customer=customer, items=items,
                                                 total_cents=None, cause=accepted))
    counts["api"] = store.round_trips - before
    pending = deque([("orders", "place", {"order_id": order_id, "customer": customer, "items": items}, order_id)])
    while pending:
        pool, task_type, payload, message_id = pending.popleft()
        before = store.round_trips
        result = run_task(pipeline.ROLES[pool], task_type, payload, settings=settings, message_id=message_id,
                          correlation_id=order_id)
        counts[pool] += store.round_trips - before
        assert result.completed, (pool, task_type, result.reason, result.error_message)
        for message in result.publishes:
            body = json.loads(message.body)
            if message.exchange == names.events:
                pending.extend((name, message.routing_key, body, message.message_id)
                               for name, role in pipeline.ROLES.items()
                               if role.spec.all_events or any(topic_matches(p, message.routing_key)
                                                              for p in role.spec.events))
            elif message.exchange == names.tasks:
                pending.append((message.routing_key, message.type or "", body, message.message_id))
    status = store.read(lambda conn: orders.read(conn, order_id))
    assert status is not None and status["status"] == "completed", status
    store.close()
    return dict(counts)


def throughput(broker_url: str, url: str, work_dir: Path, order_count: int) -> dict[str, float]:
    """Orders per second from the API's POST to the order's outcome, every role a process."""
    from warren_shop.local import LocalShop

    env = {**INSTANT, "WARREN_BROKER_URL": broker_url, "WARREN_NAMESPACE": f"b{secrets.token_hex(3)}",
           "WARREN_SHOP_DATABASE_URL": url,
           "WARREN_SHOP_CATALOG": json.dumps({"sku-apple": [120, 10**9], "sku-tea": [450, 10**9]})}
    with LocalShop(env, work_dir) as shop:
        shop.start(replicas={"payments": 2})
        shop.start_api()
        latencies: list[float] = []

        def place(_: int) -> str:
            began = time.monotonic()
            status, body = shop.order(*BASKET)
            latencies.append(time.monotonic() - began)
            assert status == 202, body
            return str(body["order_id"])

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as clients:
            ids = list(clients.map(place, range(order_count)))
        report = shop.ledger.wait(ids, timeout=60 + order_count / 2)
        seconds = time.monotonic() - started
        if report.completed != order_count:
            raise RuntimeError(f"not every order completed: {report}")
    return {"orders": order_count, "seconds": seconds, "orders_per_second": order_count / seconds,
            "post_p50_ms": statistics.median(latencies) * 1000,
            "post_p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="orders through the pipeline per database")
    parser.add_argument("--quick", action="store_true", help="40 orders: a smoke run")
    args = parser.parse_args(argv)
    count = 40 if args.quick else args.orders

    from warren.testing.broker import LocalBroker
    from warren_shop.local import LocalPostgres
    from warren_shop.store import Store
    from warren_shop.store.stock import stock_catalog

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="warren-bench-store-") as tmp, \
            LocalBroker(Path(tmp) / "broker", name="warren-bench") as broker, \
            LocalPostgres(durable=True, name="warren-bench") as postgres:
        for backend in ("sqlite", "postgresql"):
            def fresh(name: str, backend: str = backend) -> str:
                if backend == "sqlite":
                    return f"sqlite:///{Path(tmp) / f'{name}.sqlite'}"
                return postgres.create_database(name)

            url = fresh("trips")
            store = Store(url)
            store.upgrade()
            store.transaction(lambda conn: stock_catalog(conn, {sku: 1000 for sku, _ in BASKET}))
            store.close()
            trips = round_trips_per_order(url)
            print(f"[bench] {backend}: {sum(trips.values())} round trips per order", file=sys.stderr, flush=True)
            work_dir = Path(tmp) / backend
            work_dir.mkdir()
            flow = throughput(broker.amqp_url, fresh("flow"), work_dir, count)
            print(f"[bench] {backend}: {flow['orders_per_second']:.1f} orders/s", file=sys.stderr, flush=True)
            results[backend] = {"round_trips": trips, **flow}

    print(f"\n  {'database':<12} {'orders':>6} {'seconds':>8} {'orders/s':>9} {'POST p50':>9} {'POST p95':>9}"
          f" {'round trips/order':>18}")
    for backend, r in results.items():
        print(f"  {backend:<12} {r['orders']:>6} {r['seconds']:>8.1f} {r['orders_per_second']:>9.1f}"
              f" {r['post_p50_ms']:>7.0f}ms {r['post_p95_ms']:>7.0f}ms {sum(r['round_trips'].values()):>18}")
    roles = sorted({role for r in results.values() for role in r["round_trips"]})
    print("\n  round trips per order, by role: " + "; ".join(
        f"{role} {'/'.join(str(r['round_trips'].get(role, 0)) for r in results.values())}" for role in roles)
          + "  (sqlite/postgresql)\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
