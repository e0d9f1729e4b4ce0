"""Order and notification status, on SQLite and PostgreSQL: a history of steps, each recorded once
per message however often that message is delivered; a status that only moves forward; an order
completed exactly once, when it has shipped and been e-mailed, whichever comes last."""

from __future__ import annotations

from datetime import timedelta

from tests.store.test_effects import cause, new_order, side_by_side
from warren_shop.store import Store, notifications, orders


def steps(store: Store, order_id: str) -> list[tuple[str, str]]:
    order = store.read(lambda conn: orders.read(conn, order_id))
    assert order is not None
    return [(h["status"], h["message_id"]) for h in order["history"]]


def test_a_redelivered_message_records_its_step_once(store: Store) -> None:
    new_order(store, "o-1")
    added = [store.transaction(lambda conn: orders.record(conn, "o-1", "reserved", cause("r1"))) for _ in range(3)]
    assert added == [True, False, False]
    assert steps(store, "o-1") == [("accepted", "o-1"), ("reserved", "r1")]


def test_each_entry_says_when_which_message_which_attempt_and_which_worker(store: Store) -> None:
    new_order(store, "o-1")
    store.transaction(lambda conn: orders.record(conn, "o-1", "reserved", cause("r1", "inventory-7f9c:12")))
    order = store.read(lambda conn: orders.read(conn, "o-1"))
    assert order is not None
    (accepted, reserved) = order["history"]
    assert reserved == {"status": "reserved", "message_id": "r1", "attempt": 1, "worker": "inventory-7f9c:12",
                        "at": reserved["at"]}
    assert accepted["at"] <= reserved["at"] and reserved["at"].endswith("+00:00")


def test_the_status_never_moves_back_when_steps_arrive_out_of_order(store: Store) -> None:
    new_order(store, "o-1")
    for step, message in (("paid", "p1"), ("reserved", "r1"), ("accepted", "x1")):
        store.transaction(lambda conn, s=step, m=message: orders.record(conn, "o-1", s, cause(m)))
    order = store.read(lambda conn: orders.read(conn, "o-1"))
    assert order is not None and order["status"] == "paid"


def test_a_failed_order_keeps_its_reason_and_stays_failed(store: Store) -> None:
    new_order(store, "o-1")
    store.transaction(lambda conn: orders.record(conn, "o-1", "failed", cause("f1"), reason="payment_declined"))
    store.transaction(lambda conn: orders.record(conn, "o-1", "paid", cause("late")))
    order = store.read(lambda conn: orders.read(conn, "o-1"))
    assert order is not None and (order["status"], order["reason"]) == ("failed", "payment_declined")


def test_an_order_completes_once_when_shipped_and_emailed_arrive_together(store: Store) -> None:
    for n in range(10):
        new_order(store, f"o-{n}")
        store.transaction(lambda conn, n=n: orders.record(conn, f"o-{n}", "paid", cause(f"p{n}")))
    # For each order, shipping and e-mail record their steps at the same moment, each twice.
    completed_by = side_by_side(40, lambda i: store.transaction(lambda conn: orders.record_fulfilment(
        conn, f"o-{i // 4}", ("shipped", orders.EMAILED)[i % 2], cause(f"{('s', 'e')[i % 2]}{i // 4}"))))
    for n in range(10):
        assert sum(completed_by[4 * n: 4 * n + 4]) in (2, 4)  # whoever completed it says so, again if redelivered
        history = steps(store, f"o-{n}")
        assert [status for status, _ in history].count("completed") == 1
        assert history[-1][0] == "completed" and {"shipped", "emailed"} <= {s for s, _ in history}


def test_shipped_alone_is_not_completed(store: Store) -> None:
    new_order(store, "o-1")
    assert store.transaction(lambda conn: orders.record_fulfilment(conn, "o-1", "shipped", cause("s1"))) is False
    order = store.read(lambda conn: orders.read(conn, "o-1"))
    assert order is not None and order["status"] == "shipped"


def test_an_unknown_order_reads_as_none(store: Store) -> None:
    assert store.read(lambda conn: orders.read(conn, "nope")) is None
    assert store.read(lambda conn: notifications.read(conn, "nope")) is None


LEASE = timedelta(seconds=60)


def test_a_notification_is_claimed_before_it_is_sent_and_sent_once(store: Store) -> None:
    store.transaction(lambda conn: notifications.create(conn, notification_id="n-1", channel="email",
                                                        recipient="a@b.co", content="hi", cause=cause("n-1", "api")))
    claims = side_by_side(6, lambda i: store.transaction(
        lambda conn: notifications.claim(conn, "n-1", token=f"t{i}", cause=cause("n-1", f"pod{i}"), lease=LEASE)))
    assert [c.send for c in claims].count(True) == 1  # the others wait for the claim's lease
    assert all(0 < c.wait <= 60 for c in claims if not c.send)
    store.transaction(lambda conn: notifications.finish(conn, "n-1", "sent", cause("n-1")))
    later = store.transaction(lambda conn: notifications.claim(conn, "n-1", token="t9", cause=cause("n-1"),
                                                               lease=LEASE))
    assert (later.send, later.status) == (False, "sent")
    record = store.read(lambda conn: notifications.read(conn, "n-1"))
    assert record is not None and record["status"] == "sent"
    assert [h["status"] for h in record["history"]] == ["pending", "processing", "sent"]


def test_a_claim_whose_sender_died_lapses_and_another_may_send(store: Store) -> None:
    store.transaction(lambda conn: notifications.create(conn, notification_id="n-1", channel="sms",
                                                        recipient="+44 20 7946 0000", content="hi",
                                                        cause=cause("n-1", "api")))
    first = cause("n-1")
    store.transaction(lambda conn: notifications.claim(conn, "n-1", token="dead", cause=first, lease=LEASE))
    after_lease = first.__class__("n-1", 1, "pod2", first.at + LEASE + timedelta(seconds=1))
    taken = store.transaction(lambda conn: notifications.claim(conn, "n-1", token="alive", cause=after_lease,
                                                               lease=LEASE))
    assert taken.send is True


def test_a_refused_send_is_released_for_its_retry(store: Store) -> None:
    store.transaction(lambda conn: notifications.create(conn, notification_id="n-1", channel="email",
                                                        recipient="a@b.co", content="hi", cause=cause("n-1", "api")))
    store.transaction(lambda conn: notifications.claim(conn, "n-1", token="t1", cause=cause("n-1"), lease=LEASE))
    store.transaction(lambda conn: notifications.release(conn, "n-1", token="t1", cause=cause("n-1")))
    again = store.transaction(lambda conn: notifications.claim(conn, "n-1", token="t2", cause=cause("n-1"),
                                                               lease=LEASE))
    assert again.send is True
