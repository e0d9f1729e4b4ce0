"""The HTTP API: accepts orders and notifications and hands them to the workers.

An order is checked against inventory over request/reply (with a timeout), then published once,
with confirms: a request either gets ``202`` and its message is on the broker, or gets an error
and nothing was published. Handlers are plain functions run on FastAPI's thread pool, each
borrowing one of a few broker connections (pika connections are not thread-safe).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from warren import metrics
from warren.config import Settings
from warren.errors import RequestTimeout, WarrenError
from warren.producer import Producer
from warren_shop.api import operations
from warren_shop.roles.common import EMAIL_PATTERN, PHONE_PATTERN, Customer, Item, Strict
from warren_shop.settings import ApiSettings

log = logging.getLogger("warren_shop.api")


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


def create_app(settings: Settings, api: ApiSettings) -> FastAPI:
    connections = Connections(settings.model_copy(update={"publish_timeout": api.publish_timeout}), api.connections)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        connections.close()

    app = FastAPI(title="Warren shop API", version="1", lifespan=lifespan)

    @app.exception_handler(Unavailable)
    async def unavailable(_request: Any, error: Unavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(error)})

    @app.post("/api/v1/orders", status_code=202)
    def place_order(order: OrderRequest) -> Any:
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
            if stock["unknown"]:
                errors = [
                    {"type": "unknown_sku", "loc": ["body", "items", n, "sku"], "msg": f"unknown SKU {i.sku!r}",
                     "input": i.sku}
                    for n, i in enumerate(order.items) if i.sku in stock["unknown"]
                ]
                return JSONResponse(status_code=422, content={"detail": errors})
            if stock["missing"]:
                return JSONResponse(status_code=409, content={"detail": "out of stock", "missing": stock["missing"]})
            order_id = uuid.uuid4().hex
            message = {"order_id": order_id, **order.model_dump(mode="json")}
            try:
                producer.publish("orders", "place", message, message_id=order_id, correlation_id=order_id)
            except WarrenError as e:
                raise Unavailable(f"broker unavailable ({e}); the order was not placed") from None
        log.info("order id=%s accepted items=%d", order_id, len(order.items))
        return {"order_id": order_id, "status": "accepted"}

    @app.post("/api/v1/notifications/send", status_code=202)
    def send_notification(notification: NotificationRequest) -> Any:
        notification_id = uuid.uuid4().hex
        message = {"id": notification_id, **notification.model_dump(mode="json"), "status": "pending"}
        with connections.producer() as producer:
            try:
                producer.publish(notification.type, "send", message, message_id=notification_id)
            except WarrenError as e:
                raise Unavailable(f"broker unavailable ({e}); the notification was not queued") from None
        return {"id": notification_id, "status": "pending"}

    operations.mount(app, settings)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Any:
        with connections.producer() as producer:
            try:
                producer.ping()
            except WarrenError as e:
                return JSONResponse(status_code=503, content={"status": "not ready", "detail": str(e)})
        return {"status": "ready"}

    return app


def serve(settings: Settings, api: ApiSettings) -> int:
    import uvicorn

    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    # log_config=None: uvicorn's lines go through Warren's logging (WARREN_LOG_FORMAT) like the rest.
    uvicorn.run(create_app(settings, api), host=api.host, port=api.port, log_level=settings.log_level.lower(),
                access_log=False, log_config=None)
    return 0
