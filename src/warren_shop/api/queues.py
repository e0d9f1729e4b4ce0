"""The pools' queues as the operations API and dashboard show them.

Two sources. Passive ``queue.declare`` over AMQP works on every broker and any credentials, but
tells only ready messages and consumers. RabbitMQ's management API (``WARREN_API_MANAGEMENT_URL``,
with the broker URL's user and vhost) adds what is in flight (delivered, unacked) and the publish
and ack rates. Each row says which source it came from.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from warren.broker import Session
from warren.config import Settings
from warren.errors import TopologyError, WarrenError
from warren.topology import Names


@dataclass(frozen=True, slots=True)
class PoolQueues:
    pool: str
    queue: str
    ready: int
    consumers: int
    suspect: int  # ready in its suspect queue
    dead_letters: int
    in_flight: int | None  # delivered, not yet acked (management API only)
    publish_rate: float | None  # messages/s into the work queue (management API only)
    ack_rate: float | None  # messages/s acked from it (management API only)
    source: str  # "management API" or "queue.declare"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def pool_queues(settings: Settings, pools: Sequence[str], *, management_url: str | None) -> list[PoolQueues]:
    """Every pool's numbers, from the management API when its URL is given, else from AMQP."""
    names = Names(settings.namespace)
    rows = []
    session: Session | None = None
    try:
        for pool in pools:
            pn = names.pool(pool, ())
            session = session or Session.open(settings, name="warren-api-queues")
            try:
                ready, consumers = session.queue_depth(pn.queue)
                suspect = session.queue_depth(pn.suspect_queue)[0]
                dead = session.queue_depth(pn.dead_letter_queue)[0]
            except TopologyError:  # a pool not deployed here: left out (the failed declare closed the channel)
                session.close()
                session = None
                continue
            row = PoolQueues(pool, pn.queue, ready, consumers, suspect, dead, None, None, None, "queue.declare")
            if management_url:
                row = _with_management(row, settings, management_url)
            rows.append(row)
        return rows
    finally:
        if session is not None:
            session.close()


def _with_management(row: PoolQueues, settings: Settings, management_url: str) -> PoolQueues:
    broker = urlsplit(settings.resolved_broker_url())
    vhost = unquote(broker.path.lstrip("/")) or "/"
    url = f"{management_url.rstrip('/')}/api/queues/{quote(vhost, safe='')}/{quote(row.queue, safe='')}"
    credentials = f"{unquote(broker.username or 'guest')}:{unquote(broker.password or '')}"
    request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(
        credentials.encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            queue = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "code", None) or type(e).__name__
        raise WarrenError(f"the management API at {management_url} did not answer for {row.queue}: {reason}") from None
    stats = queue.get("message_stats") or {}
    return PoolQueues(
        row.pool, row.queue, int(queue.get("messages_ready", row.ready)), int(queue.get("consumers", row.consumers)),
        row.suspect, row.dead_letters, int(queue.get("messages_unacknowledged", 0)),
        float((stats.get("publish_details") or {}).get("rate", 0.0)),
        float((stats.get("ack_details") or {}).get("rate", 0.0)), "management API",
    )
