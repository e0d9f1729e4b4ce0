"""The results table, the ratios and targets, and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._cases import Measurement


@dataclass
class Outcome:
    """Every run of one case; the best is the fastest."""

    key: str
    label: str
    prefetch: int | None
    messages: int
    runs: list[Measurement] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> Measurement | None:
        return min(self.runs, key=lambda m: m.seconds, default=None)


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str
    denominator: str
    target: float | None = None  # a goal: the ratio must be at least this

    def value(self, outcomes: Mapping[str, Outcome]) -> float | None:
        top, bottom = outcomes.get(self.numerator), outcomes.get(self.denominator)
        if top is None or bottom is None or top.best is None or bottom.best is None:
            return None
        return top.best.rate / bottom.best.rate


RATIOS = (
    Ratio("worker vs raw pika, prefetch 1", "warren-p1", "pika-p1", 0.8),
    Ratio("worker vs raw pika, prefetch 50", "warren-p50", "pika-p50", 0.8),
    Ratio("worker vs Celery, prefetch 50", "warren-p50", "celery-p50", 3.0),
    Ratio("worker vs Celery, prefetch 1", "warren-p1", "celery-p1"),
    Ratio("batch publish vs raw pika pipelined", "warren-batch", "pika-batch", 0.8),
    # Metrics may cost at most 5 % of throughput.
    Ratio("worker metrics on vs off, prefetch 1", "warren-metrics-p1", "warren-p1", 0.95),
    Ratio("worker metrics on vs off, prefetch 50", "warren-metrics-p50", "warren-p50", 0.95),
)


def table(outcomes: Mapping[str, Outcome]) -> str:
    header = ("case", "prefetch", "messages", "seconds", "msg/s", "publish s")
    rows = [header]
    for o in outcomes.values():
        prefetch = "-" if o.prefetch is None else str(o.prefetch)
        best = o.best
        if best is None:
            rows.append((o.label, prefetch, str(o.messages), "ERROR", "-", "-"))
            continue
        rows.append((o.label, prefetch, str(o.messages), f"{best.seconds:.2f}", f"{best.rate:,.0f}",
                     f"{best.publish_seconds:.2f}"))
    return align(rows)


def align(rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """``rows`` (the first one a header) as columns: the first ``left`` ones left-aligned, the
    others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios_text(outcomes: Mapping[str, Outcome]) -> str:
    lines = ["ratios (msg/s over msg/s):"]
    for r in RATIOS:
        value = r.value(outcomes)
        lines.append(f"  {r.name:<38} {'n/a' if value is None else f'{value:.2f}x'}")
    lines.append("targets:")
    for r in RATIOS:
        if r.target is None:
            continue
        value = r.value(outcomes)
        verdict = "NOT RUN" if value is None else ("met" if value >= r.target else "MISSED")
        shown = "n/a" if value is None else f"{value:.2f}x"
        lines.append(f"  {r.name:<38} >= {r.target:.2f}x  got {shown:<7} {verdict}")
    return "\n".join(lines)


def errors_text(outcomes: Mapping[str, Outcome]) -> str:
    return "\n".join(f"ERROR in {o.label} (prefetch {o.prefetch}): {o.error}" for o in outcomes.values() if o.error)


def as_json(outcomes: Mapping[str, Outcome], context: Mapping[str, Any]) -> dict[str, Any]:
    def measurement(m: Measurement) -> dict[str, Any]:
        return {"seconds": round(m.seconds, 4), "msg_per_s": round(m.rate, 1),
                "publish_seconds": round(m.publish_seconds, 4)}

    return {
        **context,
        "cases": [
            {
                "key": o.key, "case": o.label, "prefetch": o.prefetch, "messages": o.messages,
                "best": None if o.best is None else measurement(o.best),
                "runs": [measurement(m) for m in o.runs], "error": o.error,
            }
            for o in outcomes.values()
        ],
        "ratios": [
            {"name": r.name, "value": None if (v := r.value(outcomes)) is None else round(v, 3), "target": r.target,
             "met": None if v is None or r.target is None else v >= r.target}
            for r in RATIOS
        ],
    }


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
