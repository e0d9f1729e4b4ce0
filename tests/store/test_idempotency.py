"""Idempotency keys, on SQLite and PostgreSQL: one key, one request body, one answer."""

from __future__ import annotations

from datetime import timedelta

from tests.store.test_effects import cause, side_by_side
from warren_shop.store import Store, idempotency

BODY = {"customer": {"email": "a@b.co"}, "items": [{"sku": "sku-tea", "quantity": 1}]}


def take(store: Store, key: str, body: object, resource_id: str, **later: float) -> object:
    when = cause(resource_id)
    if later:
        when = when.__class__(when.message_id, 1, "api", when.at + timedelta(**later))
    return store.transaction(lambda conn: idempotency.take(conn, "orders", key, body=body, resource_id=resource_id,
                                                           cause=when))


def test_the_same_key_and_body_get_the_first_answer(store: Store) -> None:
    assert take(store, "k1", BODY, "o-1") == idempotency.Taken("o-1")
    store.transaction(lambda conn: idempotency.answer(conn, "orders", "k1", 202, {"order_id": "o-1"}))
    reordered = {"items": BODY["items"], "customer": BODY["customer"]}  # the same JSON, keys in another order
    assert take(store, "k1", reordered, "o-2") == idempotency.Answered(202, {"order_id": "o-1"})


def test_the_same_key_with_another_body_is_refused(store: Store) -> None:
    take(store, "k1", BODY, "o-1")
    refused = take(store, "k1", {**BODY, "items": [{"sku": "sku-tea", "quantity": 2}]}, "o-2")
    assert isinstance(refused, idempotency.Refused) and refused.status_code == 422


def test_requests_racing_with_one_key_get_one_taker(store: Store) -> None:
    outcomes = side_by_side(8, lambda i: take(store, "k1", BODY, f"o-{i}"))
    assert sum(isinstance(o, idempotency.Taken) for o in outcomes) == 1
    assert all(o.status_code == 409 for o in outcomes if isinstance(o, idempotency.Refused))


def test_a_key_whose_request_died_is_taken_over_with_the_same_id(store: Store) -> None:
    take(store, "k1", BODY, "o-1")
    assert take(store, "k1", BODY, "o-2", seconds=61) == idempotency.Taken("o-1")


def test_a_freed_key_may_be_used_again(store: Store) -> None:
    take(store, "k1", BODY, "o-1")
    store.transaction(lambda conn: idempotency.free(conn, "orders", "k1"))
    assert take(store, "k1", BODY, "o-2") == idempotency.Taken("o-2")
