"""The HTTP API: accepts orders and notifications, hands them to the workers, and tells what
became of them.

An order is checked against inventory over request/reply (with a timeout), recorded as accepted in
the shop's store, then published once, with confirms: a request either gets ``202`` and its message
is on the broker, or gets an error and nothing was published (a record whose publish failed says
failed). ``GET`` reads an order's or a notification's status and history back from the store.
With an ``Idempotency-Key``, a repeated POST gets the first answer and publishes nothing new.
The broker or the database not answering is a 503, never a traceback.

Handlers are plain functions run on FastAPI's thread pool, each borrowing one of a few broker
connections (pika connections are not thread-safe).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import FastAPI, Header, Path
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from warren import metrics
from warren.config import Settings
from warren.errors import RequestTimeout, WarrenError
from warren.producer import Producer
from warren_shop.api import operations
from warren_shop.api.lookup import ShopStatusStore
from warren_shop.roles.common import EMAIL_PATTERN, PHONE_PATTERN, Customer, Item, Strict
from warren_shop.settings import ApiSettings, shop_settings
from warren_shop.store import Cause, Store, StoreUnavailable, idempotency, notifications, orders
from warren_shop.store.engine import process_name

log = logging.getLogger("warren_shop.api")

# A request waits this long at most for a database that went away (a restart's broken connections
# are replaced within it); then it is answered 503.
REQUEST_RETRY_SECONDS = 1.0
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=255)]
Answer = tuple[int, Any]  # an HTTP status and its JSON body


class OrderRequest(Strict):
    customer: Customer
    items: list[Item] = Field(min_length=1, max_length=50)


class NotificationRequest(Strict):
    """Seed 002's body for ``POST /api/v1/notifications/send``."""

    type: Literal["email", "sms"]
    recipient: str = Field(min_length=3, max_length=254)
    content: str = Field(min_length=1, max_length=10_000)
    variables: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _recipient_fits_the_channel(self) -> NotificationRequest:
        pattern = EMAIL_PATTERN if self.type == "email" else PHONE_PATTERN
        if not re.match(pattern, self.recipient):
            raise ValueError(f"recipient is not a valid {'e-mail address' if self.type == 'email' else 'phone number'}")
        return self


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


def create_app(settings: Settings, api: ApiSettings, store: Store | None = None) -> FastAPI:
    connections = Connections(settings.model_copy(update={"publish_timeout": api.publish_timeout}), api.connections)
    store = store or Store(shop_settings().resolved_database_url(), name="warren-api")
    me = settings.worker_name or process_name()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        connections.close()
        store.close()

    app = FastAPI(title="Warren shop API", version="1", lifespan=lifespan)

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

    @app.post("/api/v1/orders", status_code=202)
    def place_order(order: OrderRequest, idempotency_key: IdempotencyKey = None) -> Any:
        return idempotent("orders", idempotency_key, order.model_dump(mode="json"),
                          lambda order_id: place(order, order_id))

    @app.post("/api/v1/notifications/send", status_code=202)
    def send_notification(notification: NotificationRequest, idempotency_key: IdempotencyKey = None) -> Any:
        return idempotent("notifications", idempotency_key, notification.model_dump(mode="json"),
                          lambda notification_id: queue_notification(notification, notification_id))

    @app.get("/api/v1/orders/{order_id}")
    def get_order(order_id: Annotated[str, Path(max_length=64)]) -> Any:
        found = store.read(lambda conn: orders.read(conn, order_id), retry_seconds=REQUEST_RETRY_SECONDS)
        return found or JSONResponse(status_code=404, content={"detail": f"no order {order_id!r}"})

    @app.get("/api/v1/notifications/{notification_id}/status")
    def get_notification(notification_id: Annotated[str, Path(max_length=100)]) -> Any:
        found = store.read(lambda conn: notifications.read(conn, notification_id), retry_seconds=REQUEST_RETRY_SECONDS)
        return found or JSONResponse(status_code=404, content={"detail": f"no notification {notification_id!r}"})

    operations.mount(app, settings)
    app.state.status_store = ShopStatusStore(store, retry_seconds=REQUEST_RETRY_SECONDS)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
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

    shop = shop_settings()
    store = Store(shop.resolved_database_url(), name="warren-api")
    store.require_schema(wait=shop.database_retry_seconds)
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    # log_config=None: uvicorn's lines go through Warren's logging (WARREN_LOG_FORMAT) like the rest.
    uvicorn.run(create_app(settings, api, store), host=api.host, port=api.port,
                log_level=settings.log_level.lower(), access_log=False, log_config=None)
    return 0
