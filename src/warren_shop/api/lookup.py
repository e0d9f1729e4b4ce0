"""Looking up an order or a notification by id: the interface a status store implements.

The operations API and the dashboard ask ``app.state.status_store`` for a status history: the
shop's API sets ``ShopStatusStore``, its orders' and notifications' histories from the shop's
database. Without one the lookup says so instead of guessing from queues; another store plugs in by
implementing ``StatusStore`` and being set on ``app.state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from warren_shop.store import Store, notifications, orders

Kind = Literal["order", "notification"]
KINDS: tuple[Kind, ...] = ("order", "notification")


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One step of an order's or a notification's history."""

    at: datetime
    status: str
    detail: str | None = None


class StatusStore(Protocol):
    def history(self, kind: Kind, item_id: str) -> Sequence[StatusChange] | None:
        """Every status the item has had, oldest first; None if the store has never seen it."""
        ...


def store_of(state: Any) -> StatusStore | None:
    """The status store set on the app's state, if any."""
    return getattr(state, "status_store", None)


class ShopStatusStore:
    """The shop's database as a ``StatusStore``: each step with its reason, and the message, attempt
    and worker that made it."""

    def __init__(self, store: Store, *, retry_seconds: float | None = None) -> None:
        self._store = store
        self._retry_seconds = retry_seconds

    def history(self, kind: Kind, item_id: str) -> Sequence[StatusChange] | None:
        read = orders.read if kind == "order" else notifications.read
        found = self._store.read(lambda conn: read(conn, item_id), retry_seconds=self._retry_seconds)
        if found is None:
            return None
        return [StatusChange(datetime.fromisoformat(step["at"]), step["status"], _detail(step))
                for step in found["history"]]


def _detail(step: dict[str, Any]) -> str:
    made = f"message {step['message_id']}, attempt {step['attempt']}, by {step['worker']}"
    return f"{step['reason']}; {made}" if step.get("reason") else made

