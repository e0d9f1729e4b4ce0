"""The API's request metrics, on the runtime's registry (``warren.metrics``): one port serves both.

Requests are counted by route template (``/api/v1/admin/dlq/{pool}/{message_id}``), never by raw
path, so neither ids nor a scanner's made-up URLs create series; a path no route matches counts as
``unmatched``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

from warren.metrics import REGISTRY

REQUESTS = Counter("warren_api_requests", "HTTP requests answered, by route, method and status.",
                   ("route", "method", "status"), registry=REGISTRY)
REQUEST_SECONDS = Histogram("warren_api_request_duration_seconds", "Time to answer an HTTP request.",
                            ("route", "method"), registry=REGISTRY,
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


def instrument(app: FastAPI) -> None:
    """Count and time every request ``app`` answers."""

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(template, request.method, str(status)).inc()
            REQUEST_SECONDS.labels(template, request.method).observe(time.perf_counter() - started)
