"""Idempotency keys of the API's POSTs: the same key and body get the first answer, and nothing is
published again; the same key with another body is refused.

The key is taken before anything is published, with the id of the order or notification it will
create; the answer is stored when it is known. A request that finds the key taken but unanswered
is answered 409 (the first is still running), unless the first is older than the lease (its API
process died mid-request): then it takes over with the same id, so that publishing again is
deduplicated downstream like any redelivery. A 503 (nothing was published) frees the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warren_shop.store.engine import Cause, insert_new, utc
from warren_shop.store.schema import idempotency_keys as keys

LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class Taken:
    """This request holds the key: create ``resource_id``, then ``answer``."""

    resource_id: str


@dataclass(frozen=True)
class Answered:
    """The key's first answer, to give again."""

    status_code: int
    body: Any


@dataclass(frozen=True)
class Refused:
    """409 (still running) or 422 (another body under this key)."""

    status_code: int
    detail: str


def fingerprint(body: Any) -> str:
    """The request's body as a hash, insensitive to key order and whitespace."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def take(conn: Connection, scope: str, key: str, *, body: Any, resource_id: str,
         cause: Cause) -> Taken | Answered | Refused:
    """Take ``key`` for this request, or say what to answer instead."""
    request_hash = fingerprint(body)
    if insert_new(conn, keys, {"scope": scope, "key": key, "request_hash": request_hash,
                               "resource_id": resource_id, "started_at": cause.at}, key=["scope", "key"]):
        return Taken(resource_id)
    row = conn.execute(sa.select(keys).where(keys.c.scope == scope, keys.c.key == key).with_for_update()).one()
    if row.request_hash != request_hash:
        return Refused(422, "this Idempotency-Key was used with another request body")
    if row.status_code is not None:
        return Answered(row.status_code, row.response)
    if utc(row.started_at) + LEASE > cause.at:
        return Refused(409, "a request with this Idempotency-Key is still being answered; retry shortly")
    conn.execute(keys.update().where(keys.c.scope == scope, keys.c.key == key).values(started_at=cause.at))
    return Taken(row.resource_id)


def answer(conn: Connection, scope: str, key: str, status_code: int, body: Any) -> None:
    conn.execute(keys.update().where(keys.c.scope == scope, keys.c.key == key)
                 .values(status_code=status_code, response=body))


def free(conn: Connection, scope: str, key: str) -> None:
    """Nothing was done (503): the client may try again with the same key."""
    conn.execute(keys.delete().where(keys.c.scope == scope, keys.c.key == key, keys.c.status_code.is_(None)))
