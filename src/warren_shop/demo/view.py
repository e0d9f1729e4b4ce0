"""The demo's live view: per-queue depth and per-role counts from the management API, and progress.

On a terminal it redraws in place; otherwise (CI, a pipe) it prints a compact line now and then.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from warren.config import Settings
from warren.testing.broker import LocalBroker
from warren.topology import Names


class LiveView:
    def __init__(self, settings: Settings, node: LocalBroker | None, *, pools: Sequence[str]) -> None:
        self.names = Names(settings.namespace)
        self.node = node
        self.pools = pools
        self.tty = sys.stdout.isatty()
        self._lines = 0
        self._last_print = 0.0
        self._stats: dict[str, dict[str, Any]] = {}

    def _refresh(self) -> None:
        if self.node is None:
            return
        columns = "name,messages_ready,messages_unacknowledged,message_stats.ack,message_stats.publish"
        try:
            queues = self.node.management_get(f"/api/queues/%2F?columns={columns}")
        except (OSError, ValueError):
            return
        prefix = f"{self.names.namespace}."
        self._stats = {q["name"]: q for q in queues if q["name"].startswith(prefix)}

    def _row(self, pool: str) -> tuple[str, int, int, int, int, int]:
        queue = self.names.queue(pool)
        work = self._stats.get(queue, {})
        retried = sum(
            (q.get("message_stats") or {}).get("publish", 0)
            for name, q in self._stats.items()
            if name.startswith(f"{queue}.retry.")
        )
        dlq = self._stats.get(f"{queue}.dlq", {})
        return (
            pool,
            work.get("messages_ready", 0),
            work.get("messages_unacknowledged", 0),
            (work.get("message_stats") or {}).get("ack", 0),
            retried,
            dlq.get("messages_ready", 0) + dlq.get("messages_unacknowledged", 0),
        )

    def drained(self) -> bool:
        """True when no work queue holds a message (ready or in flight); True if unknown."""
        self._refresh()
        return all(r[1] == 0 and r[2] == 0 for r in map(self._row, self.pools))

    def show(self, *, settled: int, total: int, note: str | None, final: bool = False) -> None:
        self._refresh()
        if not self.tty and not final and time.monotonic() - self._last_print < 3:
            return
        self._last_print = time.monotonic()
        width = 30
        filled = int(width * settled / max(total, 1))
        lines = [f"orders settled [{'#' * filled}{'.' * (width - filled)}] {settled}/{total}"]
        if self.node is not None:
            lines.append(f"  {'role':<10} {'ready':>6} {'in flight':>9} {'processed':>9} {'retried':>7} {'dead':>5}")
            lines += [
                f"  {p:<10} {r:>6} {u:>9} {a:>9} {t:>7} {d:>5}" for p, r, u, a, t, d in map(self._row, self.pools)
            ]
        if note:
            lines.append(f"  {note}")
        if self.tty and self._lines:
            sys.stdout.write(f"\x1b[{self._lines}F\x1b[J")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        self._lines = len(lines) if self.tty else 0
