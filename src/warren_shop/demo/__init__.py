"""``warren-shop demo``: run a workload end to end on this machine and account for every message."""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from warren.config import Settings
from warren.testing.broker import LocalBroker


@dataclass(frozen=True)
class Broker:
    url: str
    management: LocalBroker | None  # the private node, whose management API the live view reads


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def provision_broker(stack: ExitStack, work_dir: Path, settings: Settings) -> Broker:
    """The broker of WARREN_BROKER_URL if one is configured, else a private node stopped on exit."""
    if settings.broker_url_file or "WARREN_BROKER_URL" in os.environ:
        say("using the broker from WARREN_BROKER_URL")
        return Broker(settings.resolved_broker_url(), None)
    say("starting a private RabbitMQ node (about 7 s) ...")
    node = stack.enter_context(LocalBroker(work_dir / "broker", name="warren-demo"))
    say(f"broker ready; management UI at {node.management_url} (guest/guest, this machine only)")
    return Broker(node.amqp_url, node)
