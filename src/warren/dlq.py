"""Dead-letter queues for operators: list, show, replay and purge, for the CLI and the API alike.

A dead-letter queue is read with ``basic.get`` and manual acks: a message that is not taken stays
unacked on the reader's channel (so the next ``get`` returns the next message, and nobody else
sees it meanwhile) and is given back with one ``basic.nack(multiple, requeue)`` at the end, to its
place in the queue. A read never goes past the depth the queue had when it started, so messages
dead-lettered during a replay wait for the next one.

Replay is at-least-once, one message at a time: a message is republished to its pool's work queue
(persistent, mandatory, confirmed), and only once the broker has confirmed it is it acked, which
removes it from the dead-letter queue. A replay killed at any point therefore loses nothing: the
messages it had not acked go back to the dead-letter queue, and at most one (republished, not yet
acked) is in both queues. The republished copy starts again at attempt 1, keeps its attempt
history, and records the replay in ``x-warren-replays``.

Messages are named by their message id; one without an id gets ``~`` and a digest of its body.
On RabbitMQ 4.x quorum queues every read that gives a message back counts as a delivery toward the
queue's delivery limit (20 by default there; dead-letter queues declared by Warren set none):
see docs/operations.md.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from warren.broker import Session
from warren.config import Settings
from warren.errors import BrokerUnavailable, ConfigError, PublishRefused, TopologyError, WarrenError
from warren.messages import H_DUE_AT, Delivery, Outgoing
from warren.topology import Names
from warren.worker import deadletter

H_REPLAYS = "x-warren-replays"  # one entry per replay: {"at_ms", "reason", "attempts"}

# Headers a replayed copy is published without: the dead letter's own, the attempt count (a replay
# starts afresh), the crash count and due time, and the broker's (it adds them again).
_DROPPED_ON_REPLAY = frozenset({
    deadletter.H_REASON, deadletter.H_ERROR_CLASS, deadletter.H_ERROR_MESSAGE, deadletter.H_ATTEMPTS,
    deadletter.H_QUEUE, deadletter.H_AT, deadletter.H_WORKER, deadletter.H_ATTEMPT, deadletter.H_DEATHS,
    H_DUE_AT, "x-delivery-count", "x-death", "x-first-death-reason", "x-first-death-queue",
    "x-first-death-exchange", "x-last-death-reason", "x-last-death-queue", "x-last-death-exchange",
})


class NothingSelected(ConfigError):
    """A replay or purge was asked for without saying which messages: ids, a filter, or everything."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters an operation takes. Empty criteria match everything; ``everything``
    says so on purpose (a replay or purge refuses an empty selection without it)."""

    ids: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    task_types: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    everything: bool = False

    @property
    def narrowed(self) -> bool:
        return bool(self.ids or self.reasons or self.task_types or self.error_classes
                    or self.older_than is not None or self.newer_than is not None)

    def require(self) -> Selection:
        """This selection, or NothingSelected if it names nothing and does not say everything."""
        if not self.narrowed and not self.everything:
            raise NothingSelected("nothing selected: give message ids, a filter (reason, task type, error class, "
                                  "age), or ask for all of them")
        return self

    def matches(self, entry: Entry, *, now: datetime) -> bool:
        if self.ids and entry.id not in self.ids:
            return False
        if self.reasons and entry.reason not in self.reasons:
            return False
        if self.task_types and (entry.task_type or "") not in self.task_types:
            return False
        if self.error_classes and (entry.error_class or "") not in self.error_classes:
            return False
        if self.older_than is not None or self.newer_than is not None:
            age = entry.age(now)
            if age is None:
                return False
            if self.older_than is not None and age < self.older_than:
                return False
            if self.newer_than is not None and age > self.newer_than:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Entry:
    """One dead letter as an operator sees it."""

    pool: str
    position: int  # 0 for the head of the queue when it was read
    id: str
    message_id: str | None
    task_type: str | None
    correlation_id: str | None
    reason: str
    error_class: str | None
    error_message: str | None
    attempts: int | None
    dead_lettered_at: datetime | None
    by_broker: bool
    headers: Mapping[str, Any] = field(repr=False)
    body: bytes = field(repr=False)
    content_type: str | None = None
    published_at: datetime | None = None

    def age(self, now: datetime) -> timedelta | None:
        return None if self.dead_lettered_at is None else now - self.dead_lettered_at

    @property
    def history(self) -> list[dict[str, Any]]:
        """The failed attempts before it was dead-lettered, oldest first."""
        return _entries(self.headers.get(deadletter.H_HISTORY))

    @property
    def replays(self) -> list[dict[str, Any]]:
        return _entries(self.headers.get(H_REPLAYS))

    def summary(self) -> dict[str, Any]:
        """The fields a listing shows, as JSON values."""
        return {
            "pool": self.pool, "position": self.position, "id": self.id, "task_type": self.task_type,
            "correlation_id": self.correlation_id, "reason": self.reason, "error_class": self.error_class,
            "error_message": self.error_message, "attempts": self.attempts,
            "dead_lettered_at": _iso(self.dead_lettered_at), "by_broker": self.by_broker,
            "replays": len(self.replays),
        }

    def details(self) -> dict[str, Any]:
        """Everything about it, as JSON values: headers, attempt history and body."""
        body: dict[str, Any]
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            body = {"encoding": "base64", "data": base64.b64encode(self.body).decode()}
        else:
            try:
                body = {"encoding": "json", "data": json.loads(text)}
            except (json.JSONDecodeError, RecursionError):
                body = {"encoding": "text", "data": text}
        return {
            **self.summary(), "message_id": self.message_id, "content_type": self.content_type,
            "published_at": _iso(self.published_at), "history": jsonable(self.history),
            "replay_history": jsonable(self.replays), "headers": jsonable(dict(self.headers)),
            "body": body, "body_bytes": len(self.body),
        }


@dataclass(frozen=True, slots=True)
class Listing:
    """What a read found: the entries that matched, and every entry counted by pool and reason."""

    entries: tuple[Entry, ...]
    counts: Mapping[str, Mapping[str, int]]  # pool -> reason -> dead letters (matching or not)
    depths: Mapping[str, int]  # pool -> messages in its dead-letter queue when read

    def as_json(self) -> dict[str, Any]:
        return {"counts": {p: dict(c) for p, c in self.counts.items()}, "depths": dict(self.depths),
                "messages": [e.summary() for e in self.entries]}


@dataclass(slots=True)
class Progress:
    """How far a replay or purge has got; passed to the caller's callback after each message read."""

    depth: int  # messages in the dead-letter queues read, when the operation started
    read: int = 0
    done: int = 0  # replayed or purged (or selected, on a dry run)
    pool: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a replay or purge did."""

    action: str  # "replayed", "purged", or "would replay" / "would purge" on a dry run
    ids: tuple[str, ...]  # of the messages it acted on, in order
    by_pool: Mapping[str, int]
    kept: int  # read but not selected: left where they were
    stopped: str | None = None  # why it stopped early (a refused publish), if it did

    @property
    def count(self) -> int:
        return len(self.ids)

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "count": self.count, "ids": list(self.ids), "by_pool": dict(self.by_pool),
                "kept": self.kept, "stopped": self.stopped}


class DeadLetters:
    """The dead-letter queues of some pools, on one broker connection per operation."""

    def __init__(self, settings: Settings, pools: Sequence[str], *, name: str = "warren-dlq",
                 skip_missing: bool = False) -> None:
        """``skip_missing``: pools without a dead-letter queue on the broker (a pool installed but
        never deployed) are left out; otherwise naming one is an error that says so."""
        if not pools:
            raise WarrenError("no pools to read: name at least one")
        self.settings = settings
        self.pools = tuple(dict.fromkeys(pools))
        self.names = Names(settings.namespace)
        self.name = name
        self.skip_missing = skip_missing

    def queue_of(self, pool: str) -> str:
        return self.names.pool(pool, ()).dead_letter_queue

    def work_queue_of(self, pool: str) -> str:
        return self.names.queue(pool)

    def _pools(self, pool: str | None) -> tuple[str, ...]:
        """The pools an operation reads: ``pool`` or all, less those without a dead-letter queue
        when ``skip_missing``. Asked on a connection of its own: a missing queue closes the channel."""
        if pool is not None and pool not in self.pools:
            raise WarrenError(f"unknown pool {pool!r} (known: {', '.join(self.pools)})")
        wanted = self.pools if pool is None else (pool,)
        present = []
        session: Session | None = None
        try:
            for p in wanted:
                session = session or Session.open(self.settings, name=self.name)
                try:
                    session.queue_depth(self.queue_of(p))
                except TopologyError:
                    session.close()
                    session = None
                    if not self.skip_missing or pool is not None:
                        raise ConfigError(
                            f"pool {p!r} has no dead-letter queue {self.queue_of(p)!r} on this broker (is "
                            f"WARREN_NAMESPACE {self.settings.namespace!r} right? was the pool ever deployed?)"
                        ) from None
                    continue
                present.append(p)
        finally:
            if session is not None:
                session.close()
        return tuple(present)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = Session.open(self.settings, name=self.name)
        try:
            yield session
        finally:
            session.close()  # anything still unacked goes back to its queue

    def depths(self) -> dict[str, int]:
        """Messages in each pool's dead-letter queue, without reading them."""
        pools = self._pools(None)
        with self._session() as session:
            return {pool: session.queue_depth(self.queue_of(pool))[0] for pool in pools}

    def listing(self, selection: Selection = Selection(), *, pool: str | None = None, limit: int | None = None,
             now: datetime | None = None) -> Listing:
        """Read every dead letter (and give each back), keeping those that match ``selection``
        (the first ``limit``, when given); counts cover all of them."""
        now = now or datetime.now(UTC)
        entries: list[Entry] = []
        counts: dict[str, Counter[str]] = {}
        depths: dict[str, int] = {}
        pools = self._pools(pool)
        with self._session() as session:
            for p in pools:
                counts[p] = Counter()
                depths[p], read = self._read(session, p)
                for entry in read:
                    counts[p][entry.reason] += 1
                    if selection.matches(entry, now=now) and (limit is None or len(entries) < limit):
                        entries.append(entry)
                session.requeue_unacked()
        return Listing(tuple(entries), counts, depths)

    def show(self, message_id: str, *, pool: str | None = None) -> Entry | None:
        """The first dead letter named ``message_id``, read up to it and given back; None if none is."""
        pools = self._pools(pool)
        with self._session() as session:
            for p in pools:
                try:
                    for entry, _ in self._deliveries(session, p):
                        if entry.id == message_id:
                            return entry
                finally:
                    _give_back(session)
        return None

    def replay(self, selection: Selection, *, pool: str | None = None, dry_run: bool = False,
               rate: float | None = None, on_progress: Callable[[Progress], None] | None = None) -> Outcome:
        """Republish each selected dead letter to its pool's work queue, confirmed, then remove it.
        ``rate``: at most this many messages per second. ``dry_run``: only say which."""
        if rate is not None and rate <= 0:
            raise WarrenError(f"rate must be above 0 messages per second, got {rate:g}")

        def act(session: Session, entry: Entry, delivery: Delivery) -> None:
            session.publish(replayed(entry, delivery, work_queue=self.work_queue_of(entry.pool)))

        return self._settle(selection.require(), act, "replay", pool=pool, dry_run=dry_run, rate=rate,
                            on_progress=on_progress)

    def purge(self, selection: Selection, *, pool: str | None = None, dry_run: bool = False,
              on_progress: Callable[[Progress], None] | None = None) -> Outcome:
        """Remove each selected dead letter for good."""
        return self._settle(selection.require(), lambda _s, _e, _d: None, "purge", pool=pool, dry_run=dry_run,
                            rate=None, on_progress=on_progress)

    def _settle(self, selection: Selection, act: Callable[[Session, Entry, Delivery], None], verb: str, *,
                pool: str | None, dry_run: bool, rate: float | None,
                on_progress: Callable[[Progress], None] | None) -> Outcome:
        """Read each pool's dead letters; for each selected one, ``act`` (which raises if it did
        not happen), then ack it. Stops at the first refused publish, leaving that one in place."""
        now = datetime.now(UTC)
        done: list[str] = []
        by_pool: Counter[str] = Counter()
        kept = 0
        stopped: str | None = None
        pace = _Pace(rate)
        pools = self._pools(pool)
        with self._session() as session:
            depths = {p: session.queue_depth(self.queue_of(p))[0] for p in pools}
            progress = Progress(depth=sum(depths.values()))
            for p in pools:
                progress.pool = p
                try:
                    for entry, delivery in self._deliveries(session, p, depth=depths[p]):
                        progress.read += 1
                        if selection.matches(entry, now=now):
                            if not dry_run:
                                pace.wait(session)
                                try:
                                    act(session, entry, delivery)
                                except PublishRefused as e:
                                    stopped = f"{entry.id}: {e}"
                                    break
                                session.ack(delivery.delivery_tag)
                            done.append(entry.id)
                            by_pool[p] += 1
                            progress.done += 1
                        else:
                            kept += 1
                        if on_progress is not None:
                            on_progress(progress)
                finally:
                    _give_back(session)
                if stopped is not None:
                    break
        action = f"would {verb}" if dry_run else ("replayed" if verb == "replay" else "purged")
        return Outcome(action, tuple(done), dict(by_pool), kept, stopped)

    def _read(self, session: Session, pool: str) -> tuple[int, list[Entry]]:
        depth = session.queue_depth(self.queue_of(pool))[0]
        return depth, [entry for entry, _ in self._deliveries(session, pool, depth=depth)]

    def _deliveries(self, session: Session, pool: str, *, depth: int | None = None) -> Iterator[tuple[Entry, Delivery]]:
        """Each message of the pool's dead-letter queue, fetched and left unacked, up to the depth
        the queue had at the start."""
        queue = self.queue_of(pool)
        if depth is None:
            depth = session.queue_depth(queue)[0]
        for position in range(depth):
            delivery = session.get(queue)
            if delivery is None:
                return
            yield entry_of(pool, delivery, position=position), delivery


def _give_back(session: Session) -> None:
    """Return what the reader holds; on a connection already lost, the broker has done so."""
    with contextlib.suppress(BrokerUnavailable):
        session.requeue_unacked()


def entry_of(pool: str, delivery: Delivery, *, position: int = 0) -> Entry:
    """An ``Entry`` from a delivery read off a dead-letter queue."""
    info = deadletter.describe(delivery.headers)
    return Entry(
        pool=pool,
        position=position,
        id=delivery.message_id or "~" + hashlib.sha256(delivery.body).hexdigest()[:16],
        message_id=delivery.message_id,
        task_type=delivery.type,
        correlation_id=delivery.correlation_id,
        reason=info.reason if info else "unknown",
        error_class=info.error_class if info else None,
        error_message=info.error_message if info else None,
        attempts=info.attempts if info and isinstance(info.attempts, int) else None,
        dead_lettered_at=_instant(info.at) if info else None,
        by_broker=info.by_broker if info else False,
        headers=dict(delivery.headers),
        body=delivery.body,
        content_type=delivery.content_type,
        published_at=datetime.fromtimestamp(delivery.timestamp, UTC) if delivery.timestamp else None,
    )


def replayed(entry: Entry, delivery: Delivery, *, work_queue: str, now_ms: int | None = None) -> Outgoing:
    """The copy of a dead letter that goes back to its pool's work queue: same id, type, body and
    correlation id; attempt count and dead-letter headers gone; attempt history kept; the replay
    recorded."""
    headers = {k: v for k, v in delivery.headers.items() if k not in _DROPPED_ON_REPLAY}
    replays = _entries(headers.get(H_REPLAYS))
    replays.append({"at_ms": now_ms if now_ms is not None else int(time.time() * 1000), "reason": entry.reason,
                    "attempts": entry.attempts or 0})
    headers[H_REPLAYS] = replays
    return Outgoing(
        exchange="",
        routing_key=work_queue,
        body=delivery.body,
        message_id=delivery.message_id or "",
        type=delivery.type,
        correlation_id=delivery.correlation_id,
        reply_to=None,  # whoever waited for a reply has long given up
        headers=headers,
        content_type=delivery.content_type or "application/octet-stream",
        timestamp=delivery.timestamp or int(time.time()),
    )


class _Pace:
    """At most ``rate`` messages per second; waits by serving the connection (heartbeats flow)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.next_at = 0.0

    def wait(self, session: Session) -> None:
        if not self.interval:
            return
        while (remaining := self.next_at - time.monotonic()) > 0:
            session.run(remaining)
        self.next_at = max(self.next_at, time.monotonic() - self.interval) + self.interval


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h`` or ``7d`` as a timedelta; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 90, 90s, 15m, 2h, 7d)") from None
    if not 0 <= seconds < 1e9:  # not negative, NaN, infinite or beyond timedelta
        raise ValueError(f"a duration must be a positive number of seconds: {text!r}")
    return timedelta(seconds=seconds)


def jsonable(value: Any) -> Any:
    """Header values (bytes, datetimes, decimals, nested tables) as JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def counts_text(counts: Mapping[str, Mapping[str, int]]) -> Iterable[str]:
    """Lines of dead letters by pool and reason, for people."""
    for pool, by_reason in counts.items():
        total = sum(by_reason.values())
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
        yield f"{pool:<14} {total:>6}  {detail}" if total else f"{pool:<14} {total:>6}"


def _entries(value: Any) -> list[dict[str, Any]]:
    return [dict(e) for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat(timespec="milliseconds")

