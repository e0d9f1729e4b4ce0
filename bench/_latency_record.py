"""Latency records: what every consumer of ``bench.latency`` writes, and how the parent reads them.

A consumer appends one fixed-width line per event to a file of its own (every process of a
consumer, Celery's pool processes included, appends to the same file)::

    <message id, 32 hex digits> <kind> <time.monotonic(), %020.6f>\\n

``kind`` is ``s`` (the handler started) or ``a`` (the ack was handed to the socket). Each line is
one ``os.write`` on an ``O_APPEND`` descriptor, so lines from several threads or processes never
interleave. ``time.monotonic()`` is one system-wide clock on Linux (CLOCK_MONOTONIC), so it
compares with the publisher's timestamps taken in another process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

START = b"s"
ACK = b"a"


class Recorder:
    """Appends records to ``path``; opens it once per process (safe across ``fork``)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._fd: tuple[int, int] | None = None  # (pid, fd)

    def started(self, message_id: str) -> None:
        self._write(message_id, START, time.monotonic())

    def acked(self, message_id: str) -> None:
        self._write(message_id, ACK, time.monotonic())

    def _write(self, message_id: str, kind: bytes, at: float) -> None:
        os.write(self._descriptor(), b"%s %s %020.6f\n" % (message_id.encode(), kind, at))

    def _descriptor(self) -> int:
        if self._fd is None or self._fd[0] != os.getpid():
            if self.path is None:
                raise RuntimeError("no record file configured for this consumer")
            self._fd = (os.getpid(), os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        return self._fd[1]


@dataclass
class RecordFile:
    """The parent's incremental reader of one consumer's record file."""

    path: Path
    offset: int = 0
    starts: dict[str, float] = field(default_factory=dict)
    acks: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0  # a second start or ack for one id: a redelivery, which a run should not see

    def read_new(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.splitlines():
            message_id, kind, at = line.split(b" ")
            target = self.starts if kind == START else self.acks
            key = message_id.decode()
            if key in target:
                self.duplicates += 1
            else:
                target[key] = float(at)

    def forget(self, ids: list[str]) -> None:
        for message_id in ids:
            self.starts.pop(message_id, None)
            self.acks.pop(message_id, None)
