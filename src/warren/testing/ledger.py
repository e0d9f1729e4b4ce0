"""The ledger: every task is completed, failed with a reason, dead-lettered with a reason, or lost.

The chaos tests (on every platform), the integration tests and the demo account for messages with
this one piece. A task is *completed* when its completion event is observed, *failed* when a
failure event is (a business outcome, such as a declined payment), *duplicated* when its terminal
event is observed more than once, *dead-lettered* when a message about it sits in a dead-letter
queue with a reason, and *lost* when none of these holds once the run has drained.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from warren.broker import Session
from warren.config import Settings
from warren.errors import BrokerUnavailable
from warren.messages import Delivery
from warren.topology import Names
from warren.worker.deadletter import DeadLetterInfo, describe


@dataclass(frozen=True)
class Report:
    expected: int
    completed: int
    failed: int
    dead_lettered: int
    duplicates: int
    lost: int
    reasons: dict[str, int]  # dead-letter reasons
    failure_reasons: dict[str, int]

    def __str__(self) -> str:
        def fmt(counts: dict[str, int]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"

        failed = f"failed={self.failed} ({fmt(self.failure_reasons)}) " if self.failed else ""
        return (
            f"ledger: expected={self.expected} completed={self.completed} {failed}"
            f"dead_lettered={self.dead_lettered} (reasons: {fmt(self.reasons)}) "
            f"duplicates={self.duplicates} lost={self.lost}"
        )


@dataclass
class Ledger:
    settings: Settings
    completion_queue: str | None
    dead_letter_queues: tuple[str, ...]
    id_field: str = "id"
    failure_events: frozenset[str] = frozenset()
    completions: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: dict[str, str] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: collections.defaultdict(list))
    dead: dict[str, DeadLetterInfo] = field(default_factory=dict)
    dead_headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    _session: Session | None = None

    @classmethod
    def for_pool(
        cls, settings: Settings, pool: str = "selftest", subscription: str | None = "selftest-ledger"
    ) -> Ledger:
        """A ledger of one pool: completions from ``subscription`` (None: none), dead letters from its DLQ."""
        names = Names(settings.namespace)
        return cls(
            settings,
            completion_queue=names.subscription(subscription) if subscription else None,
            dead_letter_queues=(names.pool(pool, ()).dead_letter_queue,),
        )

    def collect(self) -> None:
        """Read (and ack) everything now in the completion and dead-letter queues."""
        try:
            if self._session is None or not self._session.is_open:
                self._session = Session.open(self.settings, name="ledger")
            session = self._session
            while self.completion_queue and (d := session.get(self.completion_queue)) is not None:
                self._record_event(d)
                session.ack(d.delivery_tag)
            for queue in self.dead_letter_queues:
                while (d := session.get(queue)) is not None:
                    key = self._key(d)
                    self.dead[key] = describe(d.headers) or DeadLetterInfo(
                        "unknown", None, None, None, None, None, True
                    )
                    self.dead_headers[key] = dict(d.headers)
                    session.ack(d.delivery_tag)
        except BrokerUnavailable:
            self.close()

    def _record_event(self, delivery: Delivery) -> None:
        data = json.loads(delivery.body)
        key = str(data[self.id_field])
        self.events[key].append(data)
        if delivery.type in self.failure_events:
            if key in self.failures:
                self.completions[key] += 1  # a repeated failure event is a duplicate too
            self.failures[key] = str(data.get("reason", delivery.type))
        else:
            self.completions[key] += 1

    def _key(self, delivery: Delivery) -> str:
        try:
            data = json.loads(delivery.body)
        except (ValueError, RecursionError):  # a malformed body is dead-lettered by its message id
            data = None
        if isinstance(data, dict) and self.id_field in data:
            return str(data[self.id_field])
        return delivery.message_id or "?"

    def settled(self, ids: Iterable[str]) -> bool:
        return all(i in self.completions or i in self.failures or i in self.dead for i in ids)

    def wait(self, ids: Iterable[str], *, timeout: float, quiet_for: float = 0.0) -> Report:
        """Poll until every id is settled (then ``quiet_for`` more, to catch late duplicates),
        or the deadline passes; return the report either way."""
        wanted = list(ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.collect()
            if self.settled(wanted):
                break
            time.sleep(0.05)
        quiet_deadline = min(deadline, time.monotonic() + quiet_for)
        while time.monotonic() < quiet_deadline:
            self.collect()
            time.sleep(0.05)
        self.collect()
        return self.report(wanted)

    def report(self, ids: Iterable[str]) -> Report:
        wanted = list(ids)
        completed = [i for i in wanted if i in self.completions and i not in self.failures]
        failed = [i for i in wanted if i in self.failures]
        dead = [i for i in wanted if i in self.dead and i not in self.completions and i not in self.failures]
        return Report(
            expected=len(wanted),
            completed=len(completed),
            failed=len(failed),
            dead_lettered=len(dead),
            duplicates=sum(max(0, self.completions[i] - (0 if i in self.failures else 1)) for i in wanted),
            lost=len(wanted) - len(completed) - len(failed) - len(dead),
            reasons=dict(collections.Counter(self.dead[i].reason for i in wanted if i in self.dead)),
            failure_reasons=dict(collections.Counter(self.failures[i] for i in failed)),
        )

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
