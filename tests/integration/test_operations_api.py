"""The operations API against a real RabbitMQ: the token, dead letters listed, shown, replayed and
purged over HTTP, the pools' queues, and the status lookup with and without a store."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.database import fresh_sqlite_url
from tests.support.deadletters import dead_lettered, dlq, ids_in
from warren.config import load
from warren_shop.api.app import create_app
from warren_shop.api.lookup import Kind, StatusChange
from warren_shop.settings import ApiSettings
from warren_shop.store import Cause, Store, orders

pytestmark = pytest.mark.broker


@pytest.fixture
def token(tmp_path: Path) -> tuple[str, Path]:
    value = secrets.token_urlsafe(24)
    path = tmp_path / "admin-token"
    path.write_text(value + "\n")
    return value, path


@pytest.fixture
def client(rig: Any, token: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
           ) -> Iterator[TestClient]:
    """The API app in this process (real broker, a migrated shop database), as `warren-shop api`
    builds it from its environment."""
    monkeypatch.setenv("WARREN_API_ADMIN_TOKEN_FILE", str(token[1]))
    monkeypatch.setenv("WARREN_API_POOLS", '["selftest"]')
    monkeypatch.setenv("WARREN_API_AUTH", "none")  # these tests are about the operators' token
    with TestClient(create_app(rig.settings, load(ApiSettings), store=Store(fresh_sqlite_url(tmp_path)))) as c:
        yield c


def bearer(token: tuple[str, Path]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token[0]}"}


def test_the_operations_need_the_token(rig: Any, client: TestClient, token: tuple[str, Path]) -> None:
    assert client.get("/api/v1/admin/dlq").status_code == 401
    assert client.get("/api/v1/admin/dlq").headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/admin/dlq", headers={"Authorization": "Bearer not-the-token"}).status_code == 403
    assert client.get("/api/v1/admin/dlq", headers={"Authorization": f"Basic {token[0]}"}).status_code == 403
    assert client.get("/api/v1/admin/dlq", headers={"Cookie": "warren_session=forged"}).status_code == 403
    assert client.post("/api/v1/admin/dlq/purge", json={"all": True}).status_code == 401
    rig.apply_topology()
    assert client.get("/api/v1/admin/dlq", headers=bearer(token)).status_code == 200
    # The Secret rotated: the old token stops working at once.
    token[1].write_text("a-new-token-of-enough-length")
    assert client.get("/api/v1/admin/dlq", headers=bearer(token)).status_code == 403
    token[1].write_text("short")
    assert client.get("/api/v1/admin/dlq", headers=bearer(token)).status_code == 503


def test_without_a_token_file_the_operations_are_off(rig: Any) -> None:
    app = create_app(rig.settings, load(ApiSettings, auth="none"))
    with TestClient(app) as c:
        answer = c.get("/api/v1/admin/dlq", headers={"Authorization": "Bearer anything-at-all-here"})
        assert answer.status_code == 503 and "WARREN_API_ADMIN_TOKEN_FILE" in answer.json()["detail"]
        assert c.post("/dashboard/login", content="token=anything-at-all-here").status_code == 503


def test_dead_letters_over_http(rig: Any, client: TestClient, token: tuple[str, Path]) -> None:
    ids = dead_lettered(rig, 3)
    auth = bearer(token)

    listing = client.get("/api/v1/admin/dlq", headers=auth).json()
    assert listing["counts"] == {"selftest": {"oversized_body": 3}}
    assert [m["id"] for m in listing["messages"]] == ids
    assert client.get("/api/v1/admin/dlq?reason=crash_loop", headers=auth).json()["messages"] == []
    assert client.get("/api/v1/admin/dlq?older_than=soon", headers=auth).status_code == 422
    assert client.get("/api/v1/admin/dlq?pool=nope", headers=auth).status_code == 404

    shown = client.get(f"/api/v1/admin/dlq/selftest/{ids[1]}", headers=auth).json()
    assert (shown["reason"], shown["body"]) == ("oversized_body", {"encoding": "json", "data": {"ms": 1}})
    assert client.get("/api/v1/admin/dlq/selftest/nope", headers=auth).status_code == 404

    assert client.post("/api/v1/admin/dlq/replay", json={}, headers=auth).status_code == 422  # nothing selected
    assert client.post("/api/v1/admin/dlq/replay", json={"all": True, "rate": 0}, headers=auth).status_code == 422
    dry = client.post("/api/v1/admin/dlq/replay", json={"all": True, "dry_run": True}, headers=auth).json()
    assert (dry["action"], dry["count"]) == ("would replay", 3)
    replayed = client.post("/api/v1/admin/dlq/replay", json={"ids": [ids[0]]}, headers=auth).json()
    assert (replayed["action"], replayed["ids"], replayed["kept"]) == ("replayed", [ids[0]], 2)
    purged = client.post("/api/v1/admin/dlq/purge", json={"ids": [ids[2]]}, headers=auth).json()
    assert (purged["action"], purged["ids"]) == ("purged", [ids[2]])
    assert ids_in(rig, dlq(rig)) == [ids[1]]
    assert ids_in(rig, f"{rig.settings.namespace}.selftest") == [ids[0]]

    (pool,) = client.get("/api/v1/admin/pools", headers=auth).json()["pools"]
    assert (pool["pool"], pool["ready"], pool["dead_letters"], pool["source"]) == ("selftest", 1, 1, "queue.declare")


class Memory:
    """A status store in memory: what the lookup asks of one that plugs in."""

    def history(self, kind: Kind, item_id: str) -> Sequence[StatusChange] | None:
        if (kind, item_id) != ("order", "o-1"):
            return None
        return [StatusChange(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), "accepted"),
                StatusChange(datetime(2026, 12, 1, 12, 1, tzinfo=UTC), "paid", "card")]


def test_looking_up_a_status_history(rig: Any, token: tuple[str, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The shop's API looks up in the shop's database; without a store it says so; another plugs in."""
    monkeypatch.setenv("WARREN_API_ADMIN_TOKEN_FILE", str(token[1]))
    monkeypatch.setenv("WARREN_API_AUTH", "none")  # about the operators' token
    store = Store(fresh_sqlite_url(tmp_path))
    cause = Cause("m-1", 1, "api-1", datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    store.transaction(lambda conn: orders.create(conn, order_id="o-9", customer={"email": "a@b.c"},
                                                 items=[{"sku": "sku-apple", "quantity": 1}], total_cents=None,
                                                 cause=cause))
    store.transaction(lambda conn: orders.record(conn, "o-9", "failed", Cause("m-2", 3, "payments-2", cause.at),
                                                 reason="payment_declined"))
    auth = bearer(token)
    with TestClient(create_app(rig.settings, load(ApiSettings), store=store)) as client:
        history = client.get("/api/v1/admin/lookup/order/o-9", headers=auth).json()["history"]
        assert [(h["status"], h["detail"]) for h in history] == [
            ("accepted", "message m-1, attempt 1, by api-1"),
            ("failed", "payment_declined; message m-2, attempt 3, by payments-2")]
        assert client.get("/api/v1/admin/lookup/notification/o-9", headers=auth).status_code == 404
        page = client.get("/dashboard/lookup?kind=order&id=o-9", headers=auth).text
        assert "<td>failed</td><td>payment_declined; message m-2, attempt 3, by payments-2</td>" in page

        client.app.state.status_store = None  # type: ignore[attr-defined]
        answer = client.get("/api/v1/admin/lookup/order/o-1", headers=auth)
        assert answer.status_code == 501 and "not available" in answer.json()["detail"]
        assert "Status history is not available" in client.get("/dashboard/lookup?kind=order&id=o-1",
                                                                headers=auth).text

        client.app.state.status_store = Memory()  # type: ignore[attr-defined]
        history = client.get("/api/v1/admin/lookup/order/o-1", headers=auth).json()["history"]
        assert [(h["status"], h["detail"]) for h in history] == [("accepted", None), ("paid", "card")]
        assert client.get("/api/v1/admin/lookup/order/o-2", headers=auth).status_code == 404
        assert client.get("/api/v1/admin/lookup/parcel/o-1", headers=auth).status_code == 404


def test_the_dashboard_escapes_what_it_shows(rig: Any, client: TestClient, token: tuple[str, Path]) -> None:
    rig.apply_topology()
    hostile = '<script>alert("x")</script>'
    page = client.get("/dashboard/lookup", params={"kind": "order", "id": hostile}, headers=bearer(token)).text
    assert hostile not in page and "&lt;script&gt;" in page
    assert client.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/login"
    form = client.post("/dashboard/dlq/purge", content="pool=selftest&id=x&confirm=yes&csrf=forged",
                       headers=bearer(token))
    assert form.status_code == 403  # a form without the page's own form token
