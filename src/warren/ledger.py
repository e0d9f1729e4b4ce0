"""The ledger: every task is completed, dead-lettered with a reason, or lost.

The chaos tests (on every platform) and the demo account for messages with this one piece.

A task is *completed* when its completion event is observed, *duplicated* when that happens more
than once, *dead-lettered* when it sits in its pool's dead-letter queue with a reason, and *lost*
when none of these holds once the run has drained. The same code serves every platform.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from warren.broker import Session
from warren.config import Settings
from warren.errors import BrokerUnavailable
from warren.topology import Names
from warren.worker.deadletter import DeadLetterInfo, describe


@dataclass(frozen=True)
class Report:
    expected: int
    completed: int
    dead_lettered: int
    duplicates: int
    lost: int
    reasons: dict[str, int]

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        return (
            f"ledger: expected={self.expected} completed={self.completed} dead_lettered={self.dead_lettered} "
            f"(reasons: {reasons}) duplicates={self.duplicates} lost={self.lost}"
        )


@dataclass
class Ledger:
    settings: Settings
    pool: str = "selftest"
    subscription: str | None = "selftest-ledger"  # None: the pool emits no completion events
    completions: collections.Counter[str] = field(default_factory=collections.Counter)
    events: dict[str, list[dict]] = field(default_factory=lambda: collections.defaultdict(list))
    dead: dict[str, DeadLetterInfo] = field(default_factory=dict)
    dead_headers: dict[str, dict] = field(default_factory=dict)
    _session: Session | None = None

    def __post_init__(self) -> None:
        names = Names(self.settings.namespace)
        self.completion_queue = names.subscription(self.subscription) if self.subscription else None
        self.dead_letter_queue = names.pool(self.pool, ()).dead_letter_queue

    def collect(self) -> None:
        """Read (and ack) everything now in the completion and dead-letter queues."""
        try:
            if self._session is None or not self._session.is_open:
                self._session = Session.open(self.settings, name="test-ledger")
            session = self._session
            while self.completion_queue and (d := session.get(self.completion_queue)) is not None:
                data = json.loads(d.body)
                self.completions[data["id"]] += 1
                self.events[data["id"]].append(data)
                session.ack(d.delivery_tag)
            while (d := session.get(self.dead_letter_queue)) is not None:
                info = describe(d.headers) or DeadLetterInfo("unknown", None, None, None, None, None, True)
                self.dead[d.message_id or "?"] = info
                self.dead_headers[d.message_id or "?"] = dict(d.headers)
                session.ack(d.delivery_tag)
        except BrokerUnavailable:
            self.close()

    def settled(self, ids: Iterable[str]) -> bool:
        return all(i in self.completions or i in self.dead for i in ids)

    def wait(self, ids: Iterable[str], *, timeout: float, quiet_for: float = 0.0) -> Report:
        """Poll until every id is completed or dead-lettered (then ``quiet_for`` more, to catch
        late duplicates), or the deadline passes; return the report either way."""
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
        reasons = collections.Counter(self.dead[i].reason for i in wanted if i in self.dead)
        return Report(
            expected=len(wanted),
            completed=sum(1 for i in wanted if i in self.completions),
            dead_lettered=sum(1 for i in wanted if i in self.dead),
            duplicates=sum(self.completions[i] - 1 for i in wanted if self.completions[i] > 1),
            lost=sum(1 for i in wanted if i not in self.completions and i not in self.dead),
            reasons=dict(reasons),
        )

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
