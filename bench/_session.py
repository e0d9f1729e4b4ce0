"""What every benchmark's command shares: a clean exit on Ctrl-C or SIGTERM, and a private
RabbitMQ node with the machine's load average before and after the run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from warren.testing.broker import LocalBroker

RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class Main(Protocol):
    def __call__(self, argv: list[str] | None = None) -> int: ...


def entry_point(parse_args: Callable[[list[str] | None], argparse.Namespace],
                run: Callable[[argparse.Namespace], int]) -> Main:
    """A benchmark's ``main``: parse, run; Ctrl-C or SIGTERM end it with status 130, its children
    and broker stopped by the ``finally`` blocks on the way out."""
    def main(argv: list[str] | None = None) -> int:
        try:
            return run(parse_args(argv))
        except KeyboardInterrupt as e:
            print(f"\ninterrupted ({str(e) or 'SIGINT'}): every subprocess and the broker were stopped",
                  file=sys.stderr)
            return 130
    return main


@dataclass
class Bench:
    broker: LocalBroker
    logs: Path  # the children's logs
    version: str  # RabbitMQ's
    load_before: str

    @property
    def load(self) -> tuple[str, str]:
        """The load average before the run, and now."""
        return self.load_before, load_average()


@contextmanager
def private_broker() -> Iterator[Bench]:
    """Logging, SIGTERM handling and a private RabbitMQ node for one benchmark run, destroyed after."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"starting a private RabbitMQ node (child logs in {logs})", flush=True)
    load_before = load_average()
    broker = LocalBroker(name="bench")
    try:
        broker.start()
        yield Bench(broker, logs, broker.ctl("version").stdout.strip(), load_before)
    finally:
        broker.destroy()
