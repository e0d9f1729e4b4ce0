"""What the API takes from the internet before a handler sees a request: a key (401), its rate
(429), a body no larger than ``WARREN_API_MAX_BODY_BYTES`` (413, counted on the stream as it
arrives, chunked or not) and arriving within ``WARREN_API_BODY_TIMEOUT`` (408), then well-formed
JSON (422: UTF-8, no lone surrogates, nested at most ``MAX_JSON_DEPTH``).

``Guard`` is plain ASGI middleware running on the event loop: it never waits behind the request
handlers' thread pool, and they never see a body it has not read in full. ``header_deadline``
gives uvicorn's HTTP/1.1 protocol a deadline for a request's headers, which uvicorn has none of
(its keep-alive timeout only covers idle connections): a client trickling its headers is answered
408 and cut off.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from warren_shop.api.auth import KeyRing, RateLimiter, retry_after

MAX_JSON_DEPTH = 32
Scope = dict[str, Any]
Message = dict[str, Any]


class BodyRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def malformed(detail: str) -> BodyRefused:
    return BodyRefused(422, detail)


def check_json(body: bytes, content_type: str | None) -> None:
    """Refuse (422) a body that is not well-formed JSON; never echo what was sent."""
    if content_type is not None and "json" not in content_type.lower():
        raise malformed("the body must be JSON (Content-Type: application/json)")
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise malformed("the body is not valid UTF-8") from None
    except RecursionError:
        raise malformed(f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise malformed(f"the body is not JSON: {str(e)[:100]}") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise malformed(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise malformed("the body holds a string that is not valid Unicode (a lone surrogate)") from None


class Guard:
    """ASGI middleware: keys, rate, body size and deadline, well-formed JSON (see the module)."""

    def __init__(self, app: Any, *, keys: KeyRing | None, limiter: RateLimiter, max_body_bytes: int,
                 body_timeout: float) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/admin"):
            refusal = self._admit(scope, headers)
            if refusal is not None:
                await refusal(send)
                return
        try:
            body = await self._read_body(receive, headers)
            if body and scope["method"] == "POST" and path.startswith("/api/v1/"):
                check_json(body, headers.get("content-type"))
        except BodyRefused as e:
            close = e.status in (408, 413)  # the rest of the body is not read: the connection cannot go on
            await respond(send, e.status, str(e), {"connection": "close"} if close else {})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _admit(self, scope: Scope, headers: dict[str, str]) -> Any:
        """None when the caller may go on; else what to answer."""
        if self.keys is None:
            client = scope.get("client")
            caller = f"address:{client[0] if client else '?'}"
        else:
            scheme, _, presented = headers.get("authorization", "").partition(" ")
            key = self.keys.find(presented.strip()) if scheme.lower() == "bearer" and presented.strip() else None
            if key is None:
                return lambda send: respond(send, 401, "send a valid API key: Authorization: Bearer <key>",
                                            {"www-authenticate": "Bearer"})
            scope.setdefault("state", {})["api_key"] = key
            caller = f"key:{key.name}"
        wait = self.limiter.take(caller)
        if wait:
            return lambda send: respond(send, 429, f"rate limit of {self.limiter.rate:g} requests/s exceeded",
                                        {"retry-after": retry_after(wait)})
        return None

    async def _read_body(self, receive: Any, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyRefused(413, f"the body is larger than {self.max_body_bytes} bytes")
        deadline = time.monotonic() + self.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyRefused(408, f"the body did not arrive within {self.body_timeout:g}s") from None
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyRefused(413, f"the body is larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def respond(send: Any, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.encode(), v.encode()) for k, v in headers.items())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def header_deadline(timeout: float) -> type:
    """uvicorn's h11 protocol, closing (408) a connection whose request headers take over ``timeout``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:  # bytes of a request yet to start
                self._arm()
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # its headers are complete
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

    return HeaderDeadline
