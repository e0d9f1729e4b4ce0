"""Why a message was dead-lettered, written into headers and read back.

The worker writes ``x-warren-*`` headers on everything it dead-letters itself. Messages the broker
dead-letters (delivery limit reached after repeated crashes, a rejected fallback) carry the broker's
``x-first-death-*`` headers instead; ``describe`` reads both into one ``DeadLetterInfo``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

MAX_ERROR_MESSAGE = 1000

H_REASON = "x-warren-reason"
H_ERROR_CLASS = "x-warren-error-class"
H_ERROR_MESSAGE = "x-warren-error-message"
H_ATTEMPTS = "x-warren-attempts"
H_QUEUE = "x-warren-original-queue"
H_AT = "x-warren-dead-lettered-at"
H_WORKER = "x-warren-worker"
H_ATTEMPT = "x-warren-attempt"  # handler attempts that failed so far; carried across retries
H_HISTORY = "x-warren-history"  # one entry per failed attempt: {"attempt", "at_ms", "error"}
H_DEATHS = "x-warren-deaths"  # workers that died (or lost their connection) holding it, before its suspect queue


class Reason(StrEnum):
    CRASH_LOOP = "crash_loop"
    RETRIES_EXHAUSTED = "retries_exhausted"
    PERMANENT_FAILURE = "permanent_failure"
    MALFORMED_BODY = "malformed_body"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_TASK = "unknown_task"
    OVERSIZED_BODY = "oversized_body"
    MALFORMED_HEADERS = "malformed_headers"  # a header value the client could not decode
    INTERNAL_ERROR = "internal_error"  # Warren itself failed handling it (a bug): never left unacked
    REJECTED = "rejected"  # the broker dead-lettered a message the worker rejected as a last resort
    EXPIRED = "expired"


_BROKER_REASONS = {"delivery_limit": Reason.CRASH_LOOP, "rejected": Reason.REJECTED, "expired": Reason.EXPIRED}


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    reason: str
    error_class: str | None
    error_message: str | None
    attempts: int | None
    original_queue: str | None
    at: str | None
    by_broker: bool


def headers_for(
    *,
    reason: Reason,
    error_class: str | None,
    error_message: str | None,
    attempts: int,
    queue: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    headers: dict[str, Any] = {
        H_REASON: str(reason),
        H_ATTEMPTS: attempts,
        H_QUEUE: queue,
        H_AT: when,
        H_WORKER: socket.gethostname(),
    }
    if error_class:
        headers[H_ERROR_CLASS] = error_class
    if error_message:
        headers[H_ERROR_MESSAGE] = error_message[:MAX_ERROR_MESSAGE]
    return headers


def describe(headers: Mapping[str, Any]) -> DeadLetterInfo | None:
    """Why a dead-lettered message is where it is, or None if nothing says so."""
    reason = headers.get(H_REASON)
    if reason is not None:
        return DeadLetterInfo(
            reason=_str(reason),
            error_class=_text(headers.get(H_ERROR_CLASS)),
            error_message=_text(headers.get(H_ERROR_MESSAGE)),
            attempts=headers.get(H_ATTEMPTS),
            original_queue=_text(headers.get(H_QUEUE)),
            at=_text(headers.get(H_AT)),
            by_broker=False,
        )
    broker_reason = _text(headers.get("x-first-death-reason"))
    if broker_reason is None:
        return None
    deaths = headers.get("x-death") or [{}]
    first = deaths[-1] if isinstance(deaths, list) and deaths else {}
    when = first.get("time") if isinstance(first, Mapping) else None
    return DeadLetterInfo(
        reason=str(_BROKER_REASONS.get(broker_reason, broker_reason)),
        error_class=None,
        error_message=f"dead-lettered by the broker: {broker_reason}",
        attempts=headers.get("x-delivery-count"),
        original_queue=_text(headers.get("x-first-death-queue")),
        at=when.isoformat() if isinstance(when, datetime) else _text(when),
        by_broker=True,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return _str(value)


def _str(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
