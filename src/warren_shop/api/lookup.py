"""Looking up an order or a notification by id: the interface a status store implements.

The operations API and the dashboard ask ``app.state.status_store`` for a status history. A
deployment without a store (none is built into this version) says so instead of guessing from
queues; a store plugs in by implementing ``StatusStore`` and being set on ``app.state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

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
