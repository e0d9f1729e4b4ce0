"""The whole shop on this machine: its database migrated, its topology applied, every role's workers
and the API as processes, and its orders accounted for (the demo, the tests, the benchmark)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from warren.broker import Session
from warren.config import Settings, settings_from_env
from warren.testing.broker import free_ports
from warren.testing.processes import LocalWorker, child_python_path
from warren.topology import Subscription, apply
from warren_shop import pipeline
from warren_shop.local.api import LocalApi
from warren_shop.store import Store


def db_upgrade(env: dict[str, str]) -> str:
    """``warren-shop db upgrade`` with ``env``, as the chart's init containers run it before any
    role starts: what it says. RuntimeError if it fails."""
    done = subprocess.run([sys.executable, "-m", "warren_shop", "db", "upgrade"], capture_output=True, text=True,
                          env={**os.environ, **env, "PYTHONPATH": child_python_path(env)}, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`warren-shop db upgrade` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip().removeprefix("warren-shop: ")


class LocalShop:
    """The shop's roles and API as processes sharing one broker and one database.

    ``env`` names the broker (WARREN_BROKER_URL), the namespace and the database
    (WARREN_SHOP_DATABASE_URL). The database is migrated first, as the chart's init containers do;
    the topology holds the orders' outcome subscription (``ledger``) and ``subscriptions``. The
    ledger consumes the dead-letter queues unless ``keep_dead_letters`` (then ``warren dlq`` finds them).
    """

    def __init__(self, env: Mapping[str, str], work_dir: Path, *, subscriptions: tuple[Subscription, ...] = (),
                 keep_dead_letters: bool = False, metrics: bool = False) -> None:
        self.env = dict(env)
        self.metrics = metrics
        self.metrics_ports: dict[str, int] = {}
        self.work_dir = work_dir
        self.settings: Settings = settings_from_env(self.env)
        self.workers: dict[str, list[LocalWorker]] = {}
        self.api: LocalApi | None = None
        self.migrated = db_upgrade(self.env)
        self.store = Store(self.env["WARREN_SHOP_DATABASE_URL"])
        session = Session.open(self.settings, name="local-shop")
        try:
            apply(session, pipeline.build_topology(self.settings, subscriptions=(pipeline.OUTCOMES, *subscriptions)))
        finally:
            session.close()
        self.ledger = pipeline.order_ledger(self.settings, dead_letters=not keep_dead_letters)

    def start_worker(self, pool: str, *, ready: bool = True, **env: str) -> LocalWorker:
        """One more worker of ``pool``; with ``metrics`` it serves /metrics on a port of its own
        (``metrics_ports``, by worker name)."""
        n = len(self.workers.setdefault(pool, []))
        name = f"{pool}{n + 1}"
        if self.metrics:
            (self.metrics_ports[name],) = free_ports(1)
            env = {"WARREN_METRICS_PORT": str(self.metrics_ports[name]), **env}
        w = LocalWorker({**self.env, **env}, self.work_dir, pool=pool, name=name)
        self.workers[pool].append(w)
        return w.wait_ready() if ready else w

    def start(self, pools: tuple[str, ...] = pipeline.POOLS, *, replicas: Mapping[str, int] | None = None) -> LocalShop:
        """Workers of ``pools`` (``replicas`` of each, one by default), started together; then ready."""
        for pool in pools:
            for _ in range((replicas or {}).get(pool, 1)):
                self.start_worker(pool, ready=False)
        for workers in self.workers.values():
            for w in workers:
                w.wait_ready()
        return self

    def start_api(self) -> LocalApi:
        self.api = LocalApi(self.env, self.work_dir).wait_ready()
        return self.api

    def http(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
             ) -> tuple[int, Any]:
        assert self.api is not None, "start_api() first"
        return self.api.call(method, path, body, headers=headers)

    def order(self, *items: tuple[str, int], email: str = "ada@example.com",
              phone: str | None = "+44 20 7946 0000", headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return self.http("POST", "/api/v1/orders", {
            "customer": {"email": email, "phone": phone},
            "items": [{"sku": sku, "quantity": q} for sku, q in items],
        }, headers=headers)

    def rows(self, statement: str) -> list[Any]:
        """The rows a read-only SQL statement finds in the shop's database."""
        return list(self.store.read(lambda conn: conn.execute(sa.text(statement)).all()))

    def running_workers(self) -> list[LocalWorker]:
        return [w for workers in self.workers.values() for w in workers if w.alive()]

    def stop(self) -> None:
        for workers in self.workers.values():
            for w in workers:
                w.stop()
        if self.api is not None:
            self.api.stop()
        self.ledger.close()
        self.store.close()

    def __enter__(self) -> LocalShop:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
