"""Waiting, with a deadline, until the broker can take a topology: ``warren topology apply --wait``.

On Kubernetes the topology step is an init container that may start before RabbitMQ listens (a
fresh install, a node restarting). Failing at once would put the pod into the kubelet's growing
crash-loop back-off; retrying here, with a deadline, starts the worker as soon as the broker
answers and still fails visibly when it never does.

Quorum queues take their members from the nodes running when they are declared: declared while
a three-node cluster is still forming, they keep a single replica (until RabbitMQ 3.13's
membership reconciliation grows them). ``wait_for_nodes`` holds the topology step until the
cluster has the nodes it is meant to have, as the management API reports them.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from warren.broker import Session
from warren.config import Settings, redact_url
from warren.errors import BrokerUnavailable

log = logging.getLogger(__name__)


def open_session(settings: Settings, *, name: str, deadline: float,
                 clock: Callable[[], float] = time.monotonic) -> Session:
    """A session, retried with capped exponential backoff until ``deadline`` (a ``clock`` time);
    the last failure is raised once the next attempt would start after it."""
    delay = settings.reconnect_initial_delay
    while True:
        try:
            return Session.open(settings, name=name)
        except BrokerUnavailable as e:
            if clock() + delay > deadline:
                raise
            log.info("broker not ready (%s); trying again in %.1f s", e, delay)
            time.sleep(delay)
            delay = min(delay * 2, settings.reconnect_max_delay)


def wait_for_nodes(settings: Settings, *, nodes: int, management_port: int, deadline: float,
                   clock: Callable[[], float] = time.monotonic) -> int:
    """Poll the management API of the broker's host until ``nodes`` nodes run; how many do.
    Raises ``BrokerUnavailable`` saying how many ran when ``deadline`` passes."""
    url, authorization = _nodes_endpoint(settings.resolved_broker_url(), management_port)
    delay, seen = settings.reconnect_initial_delay, "no answer yet"
    while True:
        try:
            running = _running_nodes(url, authorization, timeout=settings.connect_timeout)
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors; bad JSON a ValueError
            seen = f"{redact_url(url)}: {getattr(e, 'reason', None) or e}"
        else:
            if running >= nodes:
                return running
            seen = f"{running} of {nodes} nodes running"
        if clock() + delay > deadline:
            raise BrokerUnavailable(f"the cluster did not reach {nodes} running nodes in time ({seen})")
        log.info("waiting for %d RabbitMQ nodes (%s); asking again in %.1f s", nodes, seen, delay)
        time.sleep(delay)
        delay = min(delay * 2, settings.reconnect_max_delay)


def _nodes_endpoint(broker_url: str, port: int) -> tuple[str, str]:
    """``/api/nodes`` on the AMQP URL's host, and the Basic authorization of its credentials."""
    parts = urlsplit(broker_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or "localhost"
    credentials = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
    return f"{scheme}://{host}:{port}/api/nodes", "Basic " + base64.b64encode(credentials.encode()).decode()


def _running_nodes(url: str, authorization: str, *, timeout: float) -> int:
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return sum(1 for node in json.load(reply) if node.get("running"))
