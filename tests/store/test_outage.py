"""A database that goes away: transactions are run again until it is back, within the retry window;
then the store says it is unavailable, in one line, without the SQL or its parameters."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.store.test_effects import cause, new_order
from warren_shop.local import LocalPostgres
from warren_shop.store import Store, StoreUnavailable, orders

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_cluster() -> Iterator[LocalPostgres]:
    """A cluster of this test's own, to stop and start (about a second)."""
    with LocalPostgres(durable=False, name="warren-outage") as cluster:
        yield cluster


def test_a_transaction_waits_out_a_restart_of_the_database(own_cluster: LocalPostgres) -> None:
    store = Store(own_cluster.create_database("shop"), retry_seconds=30)
    store.upgrade()
    new_order(store, "o-1")  # the pool now holds connections that the restart will break
    own_cluster.stop(immediately=True)
    threading.Timer(1.0, own_cluster.start).start()

    store.transaction(lambda conn: orders.record(conn, "o-1", "reserved", cause("r1")))

    order = store.read(lambda conn: orders.read(conn, "o-1"))
    assert order is not None and order["status"] == "reserved"
    store.close()


def test_a_database_that_stays_away_is_unavailable_after_the_window(own_cluster: LocalPostgres) -> None:
    store = Store(own_cluster.create_database("shop"), retry_seconds=0.5)
    store.upgrade()
    own_cluster.stop()
    with pytest.raises(StoreUnavailable, match=r"^database unavailable: ") as raised:
        store.transaction(lambda conn: orders.record(conn, "o-1", "reserved", cause("r1")))
    assert "INSERT" not in str(raised.value) and len(str(raised.value).splitlines()) == 1
    store.close()
