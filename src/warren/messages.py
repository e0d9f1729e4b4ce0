"""Plain values that cross the broker boundary, free of any client library type."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"


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

    @property
    def delivery_count(self) -> int:
        """Earlier deliveries of this message that ended without an ack (quorum queues count them)."""
        value = self.headers.get("x-delivery-count", 0)
        return value if isinstance(value, int) else 0


def encode_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models
    return dump(mode="json") if callable(dump) else str(value)
