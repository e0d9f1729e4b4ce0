"""The HTTP API: accepts orders and notifications, hands them to the workers, and tells what
became of them.

An order is checked against inventory over request/reply (with a timeout), recorded as accepted in
the shop's store, then published once, with confirms: a request either gets ``202`` and its message
is on the broker, or gets an error and nothing was published (a record whose publish failed says
failed). ``GET`` reads an order's or a notification's status and history back from the store.
With an ``Idempotency-Key``, a repeated POST gets the first answer and publishes nothing new.
The broker or the database not answering is a 503, never a traceback.

Before a handler runs, ``limits.Guard`` checks the caller's API key (``auth``), its rate, the body's
size, its arrival time and its JSON; the handler's dependency checks the key's scope. Every status
an endpoint can answer is in the OpenAPI document, with its body's schema.

Handlers are plain functions run on FastAPI's thread pool, each borrowing one of a few broker
connections (pika connections are not thread-safe). ``/healthz`` runs on the event loop: it never
waits behind them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from warren import metrics
from warren.config import Settings
from warren.errors import ConfigError, RequestTimeout, WarrenError
from warren.producer import Producer
from warren_shop.api import operations
from warren_shop.api.auth import ApiKey, KeyRing, RateLimiter
from warren_shop.api.limits import Guard, header_deadline
from warren_shop.api.lookup import ShopStatusStore
from warren_shop.roles.common import Customer, Item, Strict
from warren_shop.roles.templates import NotificationBody
from warren_shop.settings import ApiSettings, shop_settings
from warren_shop.store import Cause, Store, StoreUnavailable, idempotency, notifications, orders
from warren_shop.store.engine import process_name

log = logging.getLogger("warren_shop.api")

# A request waits this long at most for a database that went away (a restart's broken connections
# are replaced within it); then it is answered 503.
REQUEST_RETRY_SECONDS = 1.0
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=255)]
Answer = tuple[int, Any]  # an HTTP status and its JSON body


MAX_QUANTITY = 100


class OrderRequest(Strict):
    """An order. Lines of the same SKU are merged into one (their quantities summed, at most 100)."""

    customer: Customer
    items: list[Item] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _one_line_per_sku(self) -> OrderRequest:
        merged: dict[str, int] = {}
        for item in self.items:
            merged[item.sku] = merged.get(item.sku, 0) + item.quantity
        over = [sku for sku, quantity in merged.items() if quantity > MAX_QUANTITY]
        if over:
            raise ValueError(f"the lines of SKU {over[0]!r} add up to {merged[over[0]]} units, over {MAX_QUANTITY}")
        if len(merged) < len(self.items):
            self.items = [Item(sku=sku, quantity=quantity) for sku, quantity in merged.items()]
        return self


class NotificationRequest(NotificationBody):
    """Seed 002's body for ``POST /api/v1/notifications/send``: ``{{name}}`` in ``content`` is replaced by
    ``variables[name]``, once (a value is never expanded again); the result is at most 20,000 characters."""


class Problem(BaseModel):
    """Every error's body: ``detail`` says what is wrong (a sentence, or the field errors)."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]]


class Accepted(BaseModel):
    order_id: str | None = None
    id: str | None = None
    status: str


ERRORS = {
    400: "The request is not valid HTTP.",
    401: "No API key, or one that is not known (`WWW-Authenticate: Bearer`).",
    403: "The API key lacks this endpoint's scope.",
    404: "No such order or notification.",
    408: "The request body did not arrive within WARREN_API_BODY_TIMEOUT.",
    409: "Out of stock (`missing` lists the SKUs), or a request with this Idempotency-Key is still being answered.",
    413: "The request body is larger than WARREN_API_MAX_BODY_BYTES.",
    422: "The body is malformed (not UTF-8 or JSON, nested too deep, a lone surrogate) or invalid (the field "
         "errors), an unknown SKU, or an Idempotency-Key reused with another body.",
    429: "The key's rate limit is exceeded: retry after `Retry-After` seconds.",
    503: "The broker, inventory or the database did not answer: nothing was done.",
}


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an endpoint, for its OpenAPI document."""
    return {code: {"model": Problem, "description": ERRORS[code]} for code in codes}


WRITE_ERRORS = (400, 401, 403, 408, 413, 422, 429, 503)
READ_ERRORS = (401, 403, 404, 422, 429, 503)
bearer = HTTPBearer(auto_error=False, description="An API key from WARREN_API_KEYS_FILE.")


def require(scope: str) -> Any:
    """A dependency: the request's API key (checked by ``Guard``) must hold ``scope``, else 403."""

    async def check(request: Request, _credentials: Annotated[Any, Security(bearer)]) -> None:
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if key is not None and not key.allows(scope):
            raise HTTPException(status_code=403, detail=f"the API key {key.name!r} lacks the scope {scope}")

    return Depends(check)


class Unavailable(Exception):
    """The broker or a role the request needs did not answer: 503, nothing published."""


class Connections:
    """Up to ``size`` producers, each used by one request at a time."""

    def __init__(self, settings: Settings, size: int) -> None:
        self._settings = settings
        self._idle: queue.LifoQueue[Producer] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def producer(self) -> Iterator[Producer]:
        with self._slots:
            try:
                producer = self._idle.get_nowait()
            except queue.Empty:
                producer = Producer(self._settings, name="warren-api")
            try:
                yield producer
            finally:
                self._idle.put(producer)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def key_ring(api: ApiSettings) -> KeyRing | None:
    """The API keys, or None when the API is explicitly open; ConfigError when keys are missing."""
    if api.auth == "none":
        log.warning("WARREN_API_AUTH=none: the API serves anyone, without keys (for local development only)")
        return None
    if api.keys_file is None:
        raise ConfigError("no API keys: set WARREN_API_KEYS_FILE to a file of keys (`NAME SCOPES KEY` lines), or "
                          "WARREN_API_AUTH=none to serve without authentication (local development only)")
    return KeyRing(api.keys_file)


def create_app(settings: Settings, api: ApiSettings, store: Store | None = None) -> FastAPI:
    keys = key_ring(api)
    connections = Connections(settings.model_copy(update={"publish_timeout": api.publish_timeout}), api.connections)
    store = store or Store(shop_settings().resolved_database_url(), name="warren-api")
    me = settings.worker_name or process_name()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        connections.close()
        store.close()

    app = FastAPI(title="Warren shop API", version="1", lifespan=lifespan)
    app.state.api_keys = keys
    app.add_middleware(Guard, keys=keys, limiter=RateLimiter(api.rate_limit, api.rate_burst),
                       max_body_bytes=api.max_body_bytes, body_timeout=api.body_timeout)

    @app.exception_handler(Unavailable)
    async def unavailable(_request: Any, error: Unavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(error)})

    @app.exception_handler(StoreUnavailable)
    async def database_unavailable(_request: Any, error: StoreUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(error)})

    def write(work: Callable[[sa.Connection], Any]) -> Any:
        return store.transaction(work, retry_seconds=REQUEST_RETRY_SECONDS)

    def idempotent(scope: str, key: str | None, body: Any, create: Callable[[str], Answer]) -> Any:
        """``create(new_id)``'s answer; with a key, the key's first answer if it has one."""
        resource_id = uuid.uuid4().hex
        if key is None:
            status, content = create(resource_id)
            return JSONResponse(status_code=status, content=content)
        taken = write(lambda conn: idempotency.take(conn, scope, key, body=body, resource_id=resource_id,
                                                    cause=Cause.request(resource_id, worker=me)))
        if isinstance(taken, idempotency.Answered):
            return JSONResponse(status_code=taken.status_code, content=taken.body,
                                headers={"Idempotent-Replayed": "true"})
        if isinstance(taken, idempotency.Refused):
            return JSONResponse(status_code=taken.status_code, content={"detail": taken.detail})
        try:
            status, content = create(taken.resource_id)
        except (Unavailable, StoreUnavailable):
            with contextlib.suppress(StoreUnavailable):  # nothing was done: the key may be used again
                write(lambda conn: idempotency.free(conn, scope, key))
            raise
        try:
            write(lambda conn: idempotency.answer(conn, scope, key, status, content))
        except StoreUnavailable as e:  # it was done: say so; a retry after the key's lease is deduplicated
            log.warning("idempotency key answer not stored (%s); the request itself succeeded", e)
        return JSONResponse(status_code=status, content=content)

    def record_unpublished(kind: str, record_id: str, error: WarrenError) -> Unavailable:
        """The record says the publish failed; the client is told nothing was queued."""
        cause = Cause.request(record_id, worker=me)
        with contextlib.suppress(StoreUnavailable):
            if kind == "order":
                write(lambda conn: orders.record(conn, record_id, "failed", cause, reason="not_published"))
            else:
                write(lambda conn: notifications.finish(conn, record_id, "failed", cause, reason="not_published"))
        what = "the order was not placed" if kind == "order" else "the notification was not queued"
        return Unavailable(f"broker unavailable ({error}); {what}")

    def place(order: OrderRequest, order_id: str) -> Answer:
        with connections.producer() as producer:
            try:
                stock = producer.request(
                    "inventory", "check_stock", {"items": [i.model_dump() for i in order.items]},
                    timeout=api.stock_check_timeout,
                )
            except RequestTimeout:
                raise Unavailable(
                    f"inventory did not answer within {api.stock_check_timeout:g}s; the order was not placed"
                ) from None
            except WarrenError as e:
                raise Unavailable(f"broker unavailable ({e}); the order was not placed") from None
            if stock.get("unavailable"):
                raise Unavailable(f"inventory cannot read the stock ({stock['unavailable']}); "
                                  "the order was not placed")
            if stock["unknown"]:
                errors = [
                    {"type": "unknown_sku", "loc": ["body", "items", n, "sku"], "msg": f"unknown SKU {i.sku!r}",
                     "input": i.sku}
                    for n, i in enumerate(order.items) if i.sku in stock["unknown"]
                ]
                return 422, {"detail": errors}
            if stock["missing"]:
                return 409, {"detail": "out of stock", "missing": stock["missing"]}
            message = {"order_id": order_id, **order.model_dump(mode="json")}
            write(lambda conn: orders.create(
                conn, order_id=order_id, customer=message["customer"], items=message["items"], total_cents=None,
                cause=Cause.request(order_id, worker=me)))
            try:
                producer.publish("orders", "place", message, message_id=order_id, correlation_id=order_id)
            except WarrenError as e:
                raise record_unpublished("order", order_id, e) from None
        log.info("order id=%s accepted items=%d", order_id, len(order.items))
        return 202, {"order_id": order_id, "status": "accepted"}

    def queue_notification(notification: NotificationRequest, notification_id: str) -> Answer:
        message = {"id": notification_id, **notification.model_dump(mode="json"), "status": "pending"}
        write(lambda conn: notifications.create(
            conn, notification_id=notification_id, channel=notification.type, recipient=notification.recipient,
            content=notification.content, cause=Cause.request(notification_id, worker=me)))
        with connections.producer() as producer:
            try:
                producer.publish(notification.type, "send", message, message_id=notification_id)
            except WarrenError as e:
                raise record_unpublished("notification", notification_id, e) from None
        return 202, {"id": notification_id, "status": "pending"}

    @app.post("/api/v1/orders", status_code=202, response_model=Accepted, dependencies=[require("orders:write")],
              responses=answers(*WRITE_ERRORS, 409))
    def place_order(order: OrderRequest, idempotency_key: IdempotencyKey = None) -> Any:
        return idempotent("orders", idempotency_key, order.model_dump(mode="json"),
                          lambda order_id: place(order, order_id))

    @app.post("/api/v1/notifications/send", status_code=202, response_model=Accepted,
              dependencies=[require("notifications:write")], responses=answers(*WRITE_ERRORS, 409))
    def send_notification(notification: NotificationRequest, idempotency_key: IdempotencyKey = None) -> Any:
        return idempotent("notifications", idempotency_key, notification.model_dump(mode="json"),
                          lambda notification_id: queue_notification(notification, notification_id))

    @app.get("/api/v1/orders/{order_id}", dependencies=[require("orders:read")], responses=answers(*READ_ERRORS))
    def get_order(order_id: Annotated[str, Path(max_length=64)]) -> Any:
        found = store.read(lambda conn: orders.read(conn, order_id), retry_seconds=REQUEST_RETRY_SECONDS)
        return found or JSONResponse(status_code=404, content={"detail": f"no order {order_id!r}"})

    @app.get("/api/v1/notifications/{notification_id}/status", dependencies=[require("notifications:read")],
             responses=answers(*READ_ERRORS))
    def get_notification(notification_id: Annotated[str, Path(max_length=100)]) -> Any:
        found = store.read(lambda conn: notifications.read(conn, notification_id), retry_seconds=REQUEST_RETRY_SECONDS)
        return found or JSONResponse(status_code=404, content={"detail": f"no notification {notification_id!r}"})

    operations.mount(app, settings)
    app.state.status_store = ShopStatusStore(store, retry_seconds=REQUEST_RETRY_SECONDS)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:  # on the event loop: never behind the handlers' thread pool
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": Problem, "description": "The broker or the database does not "
                                                                     "answer."}})
    def readyz() -> Any:
        """Ready while the broker and the database both answer."""
        with connections.producer() as producer:
            try:
                producer.ping()
                store.read(lambda conn: conn.execute(sa.text("SELECT 1")), retry_seconds=0)
            except (WarrenError, StoreUnavailable) as e:
                return JSONResponse(status_code=503, content={"status": "not ready", "detail": str(e)})
        return {"status": "ready"}

    return app


def serve(settings: Settings, api: ApiSettings) -> int:
    """Serve until stopped; first, the database must hold this version's schema (else exit 2)."""
    import uvicorn

    if api.auth == "keys":
        key_ring(api)  # no keys, or unreadable ones: exit 2 before anything else is checked
    shop = shop_settings()
    store = Store(shop.resolved_database_url(), name="warren-api")
    store.require_schema(wait=shop.database_retry_seconds)
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    # log_config=None: uvicorn's lines go through Warren's logging (WARREN_LOG_FORMAT) like the rest.
    uvicorn.run(create_app(settings, api, store), host=api.host, port=api.port,
                log_level=settings.log_level.lower(), access_log=False, log_config=None,
                http=header_deadline(api.header_timeout), timeout_keep_alive=api.keep_alive_timeout)
    return 0
