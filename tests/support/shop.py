"""The reference workload running for real: every role's workers and the API as processes, sharing
one database (migrated first, with `warren-shop db upgrade`, as the chart's init containers do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from warren.broker import Session
from warren.config import Settings, settings_from_env
from warren.testing.processes import LocalWorker
from warren.topology import Subscription, apply
from warren_shop import pipeline as shop
from warren_shop.local import LocalApi, db_upgrade
from warren_shop.store import Store

FAST = {
    "WARREN_SHOP_PAYMENT_MIN_MS": "100",
    "WARREN_SHOP_PAYMENT_MAX_MS": "300",
    "WARREN_SHOP_EMAIL_MS": "50",
    "WARREN_SHOP_SMS_MS": "10",
    "WARREN_SHOP_SHIPPING_MS": "20",
    "WARREN_SHOP_CREDIT_LIMIT_CENTS": "5000",
    "WARREN_RETRY_INITIAL_DELAY_MS": "100",
    "WARREN_RETRY_MAX_ATTEMPTS": "3",
}
EVERYTHING = Subscription("everything", fanout=True)
EVERYTHING_TOO = Subscription("everything-too", fanout=True)


class Shop:
    def __init__(self, env: dict[str, str], work_dir: Path, *, database_url: str) -> None:
        self.env = {**FAST, "WARREN_SHOP_DATABASE_URL": database_url, **env}
        self.work_dir = work_dir
        self.settings: Settings = settings_from_env(self.env)
        self.workers: dict[str, list[LocalWorker]] = {}
        self.api: LocalApi | None = None
        db_upgrade(self.env)
        self.store = Store(database_url)
        session = Session.open(self.settings, name="test-shop")
        try:
            apply(session, shop.build_topology(
                self.settings, subscriptions=(shop.OUTCOMES, EVERYTHING, EVERYTHING_TOO)
            ))
        finally:
            session.close()
        self.ledger = shop.order_ledger(self.settings)

    def start_worker(self, pool: str, *, ready: bool = True, **env: str) -> LocalWorker:
        n = len(self.workers.setdefault(pool, []))
        w = LocalWorker({**self.env, **env}, self.work_dir, pool=pool, name=f"{pool}{n + 1}")
        self.workers[pool].append(w)
        return w.wait_ready() if ready else w

    def start(self, pools: tuple[str, ...] = shop.POOLS) -> Shop:
        for pool in pools:
            self.start_worker(pool, ready=False)
        for workers in self.workers.values():
            for w in workers:
                w.wait_ready()
        return self

    def start_api(self) -> None:
        self.api = LocalApi(self.env, self.work_dir).wait_ready()

    def http(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
             ) -> tuple[int, Any]:
        assert self.api is not None
        return self.api.call(method, path, body, headers=headers)

    def order(
        self, *items: tuple[str, int], email: str = "ada@example.com", phone: str | None = "+44 20 7946 0000"
    ) -> tuple[int, Any]:
        return self.http("POST", "/api/v1/orders", {
            "customer": {"email": email, "phone": phone},
            "items": [{"sku": sku, "quantity": q} for sku, q in items],
        })

    def rows(self, statement: str) -> list[Any]:
        """The rows a read-only SQL statement finds in the shop's database."""
        return list(self.store.read(lambda conn: conn.execute(sa.text(statement)).all()))

    def stop(self) -> None:
        for workers in self.workers.values():
            for w in workers:
                w.stop()
        if self.api is not None:
            self.api.stop()
        self.ledger.close()
        self.store.close()
