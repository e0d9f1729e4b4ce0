"""CPU time from /proc (Linux): of a process group, of one process, and of the whole machine.

For telling a slow consumer from a starved one: on a 2-core machine shared by the broker, the
publisher and the consumer, a consumer that spends more CPU per message takes it from the other
two, and every latency grows (the broker's confirm latency included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()  # from field 3 (state) on: the name may hold spaces


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, every thread included (0 if it is gone)."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def group_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


@dataclass(frozen=True)
class MachineTimes:
    busy: float  # seconds of all CPUs not idle
    total: float

    @classmethod
    def now(cls) -> MachineTimes:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        return cls((sum(values) - idle) / _TICK, sum(values) / _TICK)

    def busy_share_since(self, earlier: MachineTimes) -> float:
        """The share of the machine's CPU time that was busy between ``earlier`` and this."""
        total = self.total - earlier.total
        return (self.busy - earlier.busy) / total if total > 0 else 0.0
