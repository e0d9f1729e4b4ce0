"""The API as a real process on a real broker, for the tests of what it answers the internet:
its database (SQLite) migrated, the shop's topology applied, API keys in a file as the chart mounts
them, and raw-socket helpers for what an HTTP client library will not send."""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.database import fresh_sqlite_url
from warren.broker import Session
from warren.config import Settings
from warren.testing.broker import LocalBroker
from warren.topology import apply
from warren_shop import pipeline
from warren_shop.local import LocalApi


@dataclass
class Keys:
    """The keys the API was given: one per role a caller may have."""

    path: Path
    writer: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # orders:write, notifications:write
    reader: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # orders:read, notifications:read
    admin: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def write(self) -> Keys:
        self.path.write_text(f"writer orders:write,notifications:write {self.writer}\n"
                             f"reader orders:read,notifications:read {self.reader}\n"
                             f"ops admin {self.admin}\n")
        return self


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def running_api(broker: LocalBroker, work_dir: Path, **env: str) -> Iterator[tuple[LocalApi, Keys, Settings]]:
    """The API process with keys from a file (unless ``env`` says otherwise), ready."""
    namespace = f"a{secrets.token_hex(4)}"
    settings = Settings(_env_file=None, broker_url=broker.amqp_url, namespace=namespace)
    session = Session.open(settings, name="test-topology")
    try:
        apply(session, pipeline.build_topology(settings))
    finally:
        session.close()
    keys = Keys(work_dir / "api-keys").write()
    api = LocalApi({"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": namespace,
                    "WARREN_SHOP_DATABASE_URL": fresh_sqlite_url(work_dir), "WARREN_API_KEYS_FILE": str(keys.path),
                    **env}, work_dir)
    try:
        api.wait_ready()
        yield api, keys, settings
    finally:
        api.stop()


def raw_exchange(url: str, chunks: list[bytes], *, pause: float = 0.0, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``chunks`` over one connection, ``pause`` seconds apart, stopping when the server answers or
    closes; then read until it closes: (what it answered, seconds from the first byte to the close)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        started = time.monotonic()
        s.setblocking(False)
        answer = b""
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except OSError:  # closed on us
                break
            deadline = time.monotonic() + pause
            answer += _read_available(s, until=deadline)
            if answer:
                break
        s.setblocking(True)
        s.settimeout(max(0.1, timeout - (time.monotonic() - started)))
        with contextlib.suppress(OSError):  # every exchange sent here ends with the server closing
            while chunk := s.recv(65536):
                answer += chunk
        return answer, time.monotonic() - started


def _read_available(s: socket.socket, *, until: float) -> bytes:
    """What the server sends before ``until`` (``<closed>`` if it closed without a word)."""
    got = b""
    while (readable := select.select([s], [], [], max(0.0, until - time.monotonic()))[0]):
        try:
            data = readable[0].recv(65536)
        except OSError:
            data = b""
        if not data:
            return got or b"<closed>"
        got += data
    return got


def status_of(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0
