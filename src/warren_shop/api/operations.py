"""The operations API: dead letters (list, show, replay, purge), the pools' queues and status
lookups, for operators, behind a token; and the dashboard on top of the same operations.

The token is read from a file (a mounted Kubernetes Secret, ``WARREN_API_ADMIN_TOKEN_FILE``) on
every request, so rotating the Secret takes effect without a restart; it is compared in constant
time. No file configured: the operations answer 503 and say how to turn them on. A request without
credentials gets 401, one with the wrong token 403. An API key with the ``admin`` scope
(``WARREN_API_KEYS_FILE``, see ``auth``) is accepted as a bearer token too. Programs send
``Authorization: Bearer TOKEN``; the dashboard signs in once and then holds a cookie derived from the
token (see ``dashboard``).

``mount`` adds all of it, and the request metrics when ``WARREN_METRICS_PORT`` is set, to the app
``create_app`` builds.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from warren.config import Settings, load
from warren.dlq import DeadLetters, NothingSelected, Selection, parse_duration
from warren.errors import ConfigError, WarrenError
from warren_shop.api import telemetry
from warren_shop.api.lookup import KINDS, Kind, store_of
from warren_shop.api.queues import pool_queues
from warren_shop.pipeline import POOLS

MIN_TOKEN_LENGTH = 16
SESSION_COOKIE = "warren_session"


class OperationsSettings(BaseSettings):
    """The operations API and dashboard (``WARREN_API_*``, beside the API's own settings)."""

    model_config = SettingsConfigDict(env_prefix="WARREN_API_", extra="ignore", frozen=True)

    admin_token_file: Path | None = Field(
        default=None,
        description="File holding the operators' token (a mounted Secret), at least 16 characters; unset: the "
        "operations API and the dashboard are off.",
    )
    management_url: str | None = Field(
        default=None,
        description="RabbitMQ's management API (http://host:15672), read with the broker URL's user, for in-flight "
        "counts and rates on the dashboard; unset: ready messages and consumers from queue declares only.",
    )
    max_replay_rate: float = Field(default=500.0, gt=0, description="The fastest replay the API runs, messages/s.")
    pools: tuple[str, ...] = Field(
        default=POOLS, min_length=1, description='The pools whose queues it shows, as JSON (["orders", "email"]).'
    )


class Token:
    """The operators' token, read from its file on each use."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            self.read()  # a missing or short token file stops the API at start-up

    def read(self) -> str:
        if self.path is None:
            raise ConfigError("the operations API is off: set WARREN_API_ADMIN_TOKEN_FILE to a file holding a token")
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"WARREN_API_ADMIN_TOKEN_FILE: cannot read {self.path}: {e.strerror}") from None
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"WARREN_API_ADMIN_TOKEN_FILE: the token in {self.path} is shorter than "
                              f"{MIN_TOKEN_LENGTH} characters")
        return token

    def current(self) -> str:
        """The token, or 503 when the operations API is off or its file unreadable."""
        try:
            return self.read()
        except ConfigError as e:
            raise HTTPException(status_code=503, detail=str(e)) from None

    def derived(self, purpose: str) -> str:
        """A value only the token's holder can compute (the dashboard's cookie, its form token)."""
        return hmac.new(self.current().encode(), purpose.encode(), hashlib.sha256).hexdigest()

    def accepts(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.current().encode())

    def accepts_session(self, cookie: str) -> bool:
        return hmac.compare_digest(cookie.encode(), self.derived("dashboard-session").encode())


@dataclass(frozen=True)
class Operations:
    """What the operations need, kept on ``app.state.operations``."""

    settings: Settings
    config: OperationsSettings
    token: Token
    pools: tuple[str, ...]

    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.settings, self.pools, name="warren-api-dlq", skip_missing=True)

    def queues(self) -> list[Any]:
        return pool_queues(self.settings, self.pools, management_url=self.config.management_url)


def operations_of(request: Request) -> Operations:
    ops: Operations = request.app.state.operations
    return ops


def authorized(request: Request) -> Operations:
    """The operations, for a request that proves it holds the token; 401 or 403 otherwise."""
    ops = operations_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    keys = getattr(request.app.state, "api_keys", None)
    if keys is not None and scheme.lower() == "bearer":
        key = keys.find(presented.strip())
        if key is not None and key.allows("admin"):  # an API key with the admin scope opens them too
            return ops
    ops.token.current()  # 503 first, when the operations API is off
    if header:
        if scheme.lower() != "bearer" or not ops.token.accepts(presented.strip()):
            raise HTTPException(status_code=403, detail="wrong token")
        return ops
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if not ops.token.accepts_session(cookie):
            raise HTTPException(status_code=403, detail="the dashboard session is not valid (the token changed?)")
        return ops
    raise HTTPException(status_code=401, detail="send Authorization: Bearer <token>",
                        headers={"WWW-Authenticate": "Bearer"})


Authorized = Annotated[Operations, Depends(authorized)]


class Choice(BaseModel):
    """Which dead letters a replay or purge takes: ids and filters, or ``all``."""

    model_config = ConfigDict(extra="forbid")

    pool: str | None = Field(default=None, description="One pool's dead letters (default: every pool's).")
    ids: list[str] = Field(default_factory=list, max_length=10_000)
    reasons: list[str] = Field(default_factory=list)
    task_types: list[str] = Field(default_factory=list)
    error_classes: list[str] = Field(default_factory=list)
    older_than: str | None = Field(default=None, description="e.g. 30m, 2d")
    newer_than: str | None = None
    all: bool = False
    dry_run: bool = False

    def selection(self) -> Selection:
        return selection_of(ids=self.ids, reasons=self.reasons, task_types=self.task_types,
                            error_classes=self.error_classes, older_than=self.older_than, newer_than=self.newer_than,
                            everything=self.all)


class ReplayChoice(Choice):
    rate: float | None = Field(default=None, gt=0, description="At most this many messages per second.")


def selection_of(*, ids: list[str] | None = None, reasons: list[str] | None = None,
                 task_types: list[str] | None = None, error_classes: list[str] | None = None,
                 older_than: str | None = None, newer_than: str | None = None, everything: bool = False) -> Selection:
    """A ``Selection`` from request values; 422 naming the bad one."""
    return Selection(ids=frozenset(ids or ()), reasons=frozenset(reasons or ()),
                     task_types=frozenset(task_types or ()), error_classes=frozenset(error_classes or ()),
                     older_than=_duration("older_than", older_than), newer_than=_duration("newer_than", newer_than),
                     everything=everything)


def _duration(name: str, text: str | None) -> timedelta | None:
    if not text:
        return None
    try:
        return parse_duration(text)
    except ValueError as e:
        raise HTTPException(status_code=422, detail=f"{name}: {e}") from None


def broker_call(call: Any) -> Any:
    """Run a DLQ or queue operation; Warren's errors become 4xx/503 with their message."""
    try:
        return call()
    except NothingSelected as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    except ConfigError as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    except WarrenError as e:
        message = str(e)
        if message.startswith("unknown pool"):
            raise HTTPException(status_code=404, detail=message) from None
        raise HTTPException(status_code=503, detail=message) from None


class Problem(BaseModel):
    detail: str | list[dict[str, Any]]


router = APIRouter(prefix="/api/v1/admin", tags=["operations"], responses={
    401: {"model": Problem, "description": "No credentials (`WWW-Authenticate: Bearer`)."},
    403: {"model": Problem, "description": "The wrong token, or a session that is no longer valid."},
    404: {"model": Problem, "description": "No such pool, dead letter or item."},
    422: {"model": Problem, "description": "A bad filter or duration, or nothing selected."},
    501: {"model": Problem, "description": "This API has no status store."},
    503: {"model": Problem, "description": "The operations API is off (no token file), or the broker does not "
                                           "answer."},
})


@router.get("/pools")
def pools(ops: Authorized) -> Any:
    return {"pools": [row.as_json() for row in broker_call(ops.queues)]}


@router.get("/dlq")
def list_dead_letters(
    ops: Authorized,
    pool: str | None = None,
    reason: Annotated[list[str] | None, Query()] = None,
    task_type: Annotated[list[str] | None, Query()] = None,
    error_class: Annotated[list[str] | None, Query()] = None,
    older_than: str | None = None,
    newer_than: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Any:
    chosen = selection_of(reasons=reason, task_types=task_type, error_classes=error_class, older_than=older_than,
                          newer_than=newer_than)
    return broker_call(lambda: ops.dead_letters().listing(chosen, pool=pool, limit=limit)).as_json()


@router.get("/dlq/{pool}/{message_id:path}")
def show_dead_letter(ops: Authorized, pool: str, message_id: str) -> Any:
    entry = broker_call(lambda: ops.dead_letters().show(message_id, pool=pool))
    if entry is None:
        raise HTTPException(status_code=404, detail=f"no dead letter {message_id!r} in pool {pool!r}")
    return entry.details()


@router.post("/dlq/replay")
def replay(ops: Authorized, choice: ReplayChoice) -> Any:
    rate = min(choice.rate or ops.config.max_replay_rate, ops.config.max_replay_rate)
    return broker_call(lambda: ops.dead_letters().replay(
        choice.selection(), pool=choice.pool, dry_run=choice.dry_run, rate=rate)).as_json()


@router.post("/dlq/purge")
def purge(ops: Authorized, choice: Choice) -> Any:
    return broker_call(lambda: ops.dead_letters().purge(choice.selection(), pool=choice.pool,
                                                        dry_run=choice.dry_run)).as_json()


@router.get("/lookup/{kind}/{item_id}")
async def lookup(request: Request, ops: Authorized, kind: str, item_id: str) -> Any:
    if kind not in KINDS:
        raise HTTPException(status_code=404, detail=f"nothing is looked up as {kind!r} (only {', '.join(KINDS)})")
    store = store_of(request.app.state)
    if store is None:
        raise HTTPException(status_code=501, detail="status history is not available: this API has no status store")
    chosen: Kind = "order" if kind == "order" else "notification"
    history = await run_in_threadpool(store.history, chosen, item_id)
    if history is None:
        raise HTTPException(status_code=404, detail=f"no {kind} {item_id!r}")
    return {"kind": kind, "id": item_id, "history": [
        {"at": change.at.isoformat(), "status": change.status, "detail": change.detail} for change in history]}


def mount(app: FastAPI, settings: Settings, *, config: OperationsSettings | None = None) -> None:
    """Add the operations API, the dashboard and (with ``WARREN_METRICS_PORT``) request metrics."""
    from warren_shop.api import dashboard

    config = config or load(OperationsSettings)
    app.state.operations = Operations(settings, config, Token(config.admin_token_file), config.pools)
    if settings.metrics_port is not None:
        telemetry.instrument(app)
    app.include_router(router)
    app.include_router(dashboard.router)
