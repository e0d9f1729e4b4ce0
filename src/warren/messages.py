"""Plain values that cross the broker boundary, free of any client library type."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"
H_DUE_AT = "x-warren-due-at"  # epoch ms: a delayed message is not to be handled before this


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: persistent, with an id and a timestamp, always confirmed and mandatory."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    type: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] | None = None
    content_type: str = JSON
    timestamp: int = field(default_factory=lambda: int(time.time()))
    expiration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message as the broker handed it to a consumer."""

    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None = None
    type: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    timestamp: int | None = None
    queue: str | None = None  # the queue it was consumed from
    channel: int = 0  # which of the session's consumer channels it came on (delivery tags are per channel)
    header_problems: tuple[str, ...] = ()  # header values the client could not decode, described

    @property
    def delivery_count(self) -> int:
        """Earlier deliveries of this message that ended without an ack (quorum queues count them)."""
        value = self.headers.get("x-delivery-count", 0)
        return value if isinstance(value, int) else 0


MAX_SHORT_STRING = 255  # AMQP's limit for message ids, correlation ids, types


def derived_id(base: str, suffix: str) -> str:
    """``base/suffix``, the id of a message derived from another (an event, a follow-up task), so a
    redelivered task derives the same ids again. When that is longer than AMQP allows, the base is
    replaced by its digest: still the same for the same base, and unique in practice."""
    candidate = f"{base}/{suffix}"
    if len(candidate.encode()) <= MAX_SHORT_STRING:
        return candidate
    digest = hashlib.sha256(base.encode(errors="surrogatepass")).hexdigest()[:40]
    return f"{digest}/{suffix}"[:MAX_SHORT_STRING]


def encode_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models
    return dump(mode="json") if callable(dump) else str(value)
