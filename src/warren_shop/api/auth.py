"""API keys: who may place orders and send notifications, and how often.

Keys come from a file, or a directory of files (a mounted Kubernetes Secret, ``WARREN_API_KEYS_FILE``),
one per line: ``NAME SCOPE[,SCOPE...] KEY``. Several may be valid at once, so a key is rotated by
adding the new one, moving clients over, then removing the old one; the file is read again when it
changes (at most once a second), without a restart. Only SHA-256 digests of the keys are kept, and a
presented key is compared with each of them in constant time. ``KEY`` may itself be ``sha256:HEX``, so
the Secret need not hold the key in the clear.

No key: 401 with ``WWW-Authenticate: Bearer``; a key without the route's scope: 403. ``admin``
holds every scope (and opens the operations API). Each key has a token bucket: past its rate, 429
with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from warren.errors import ConfigError

log = logging.getLogger(__name__)

SCOPES = ("orders:write", "orders:read", "notifications:write", "notifications:read", "admin")
MIN_KEY_LENGTH = 16
RELOAD_SECONDS = 1.0


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    digest: bytes  # SHA-256 of the key

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_keys(text: str, *, source: str) -> list[ApiKey]:
    """The keys in one file's text; ConfigError naming the line that is wrong (never its key)."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"WARREN_API_KEYS_FILE: {source} line {number}"
        if len(parts) != 3:
            raise ConfigError(f"{where}: expected `NAME SCOPE[,SCOPE...] KEY`")
        name, scopes_text, key = parts
        scopes = frozenset(scopes_text.split(","))
        unknown = sorted(scopes - set(SCOPES))
        if unknown:
            raise ConfigError(f"{where}: unknown scope {', '.join(unknown)} (known: {', '.join(SCOPES)})")
        if key.startswith("sha256:"):
            try:
                hashed = bytes.fromhex(key.removeprefix("sha256:"))
            except ValueError:
                hashed = b""
            if len(hashed) != 32:
                raise ConfigError(f"{where}: sha256: must be followed by 64 hex digits")
        elif len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"{where}: the key of {name!r} is shorter than {MIN_KEY_LENGTH} characters")
        else:
            hashed = digest(key)
        keys.append(ApiKey(name, scopes, hashed))
    return keys


def read_keys(path: Path) -> list[ApiKey]:
    """Every key in ``path`` (a file, or each visible file of a directory, as a Secret is mounted)."""
    try:
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()) \
            if path.is_dir() else [path]
        keys = [key for file in files for key in parse_keys(file.read_text(encoding="utf-8"), source=str(file))]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"WARREN_API_KEYS_FILE: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not keys:
        raise ConfigError(f"WARREN_API_KEYS_FILE: {path} holds no key")
    return keys


class KeyRing:
    """The keys of a file, read again when it may have changed; the last good ones if it breaks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = read_keys(path)  # a missing, empty or broken file stops the API at start-up
        self._read_at = time.monotonic()

    def keys(self) -> list[ApiKey]:
        if time.monotonic() - self._read_at >= RELOAD_SECONDS:
            self._read_at = time.monotonic()
            try:
                self._keys = read_keys(self.path)
            except ConfigError as e:
                log.warning("API keys not reloaded, the previous ones stay in use: %s", e)
        return self._keys

    def find(self, presented: str) -> ApiKey | None:
        """The key ``presented`` is, compared with every key in constant time."""
        wanted = digest(presented)
        found = None
        for key in self.keys():
            if hmac.compare_digest(wanted, key.digest) and found is None:
                found = key
        return found


@dataclass
class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second on average, ``burst`` at once."""

    rate: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # caller: (tokens, when)

    def take(self, caller: str, now: float | None = None) -> float:
        """0 if the request may go ahead, else the seconds until it could."""
        now = time.monotonic() if now is None else now
        if len(self._buckets) > 10_000:  # forget callers whose buckets are full again
            self._buckets = {c: (t, w) for c, (t, w) in self._buckets.items()
                             if t + (now - w) * self.rate < self.burst}
        tokens, when = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        if tokens >= 1:
            self._buckets[caller] = (tokens - 1, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1 - tokens) / self.rate


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))
