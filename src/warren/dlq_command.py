"""``warren dlq``: list, show, replay and purge dead letters from a terminal.

The work is ``warren.dlq``'s (the shop's API serves the same operations); this module only parses
arguments, asks before a purge, draws progress and prints. Pools default to every installed one
(the ``warren.pools`` entry points).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from warren.config import Settings
from warren.dlq import DeadLetters, Entry, Outcome, Progress, Selection, counts_text, jsonable, parse_duration
from warren.errors import ConfigError
from warren.worker.pool import registered_pools

EXIT_NOT_FOUND = 4


def add_parser(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list, show, replay or purge dead letters")
    actions = dlq.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="dead letters, counted by reason, with filters")
    _filters(listing)
    listing.add_argument("--limit", type=_count, default=None, help="list at most this many (counts cover all)")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = actions.add_parser("show", help="one dead letter: headers, attempt history, body")
    show.add_argument("id", help="its message id (as `warren dlq list` shows it)")
    show.add_argument("--pool", action="append", dest="pools", metavar="POOL", help="look in this pool only")
    show.add_argument("--json", action="store_true", help="print JSON")

    replay = actions.add_parser(
        "replay", help="republish dead letters to their pool's work queue (confirmed, then removed)")
    replay.add_argument("ids", nargs="*", metavar="ID", help="message ids to replay")
    _filters(replay)
    replay.add_argument("--all", action="store_true", help="every dead letter of the pools")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed; change nothing")
    replay.add_argument("--rate", type=_rate, default=None, metavar="N", help="at most N messages per second")

    purge = actions.add_parser("purge", help="delete dead letters for good (asks first)")
    purge.add_argument("ids", nargs="*", metavar="ID", help="message ids to delete")
    _filters(purge)
    purge.add_argument("--all", action="store_true", help="every dead letter of the pools")
    purge.add_argument("--dry-run", action="store_true", help="say what would be deleted; change nothing")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask (needed without a terminal)")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", action="append", dest="pools", metavar="POOL",
                        help="this pool's dead letters (repeatable; default: every installed pool)")
    parser.add_argument("--reason", action="append", default=[], help="dead-letter reason, e.g. retries_exhausted")
    parser.add_argument("--task", action="append", default=[], dest="task_types", metavar="TYPE",
                        help="task type")
    parser.add_argument("--error-class", action="append", default=[], metavar="CLASS",
                        help="the handler's exception class, e.g. TimeoutError")
    parser.add_argument("--older-than", type=_age, metavar="AGE", help="dead-lettered longer ago than this (30m, 2d)")
    parser.add_argument("--newer-than", type=_age, metavar="AGE", help="dead-lettered within this (30m, 2d)")


def _age(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0 messages per second, got {text}")
    return value


def selection(args: argparse.Namespace) -> Selection:
    return Selection(
        ids=frozenset(getattr(args, "ids", ()) or ()),
        reasons=frozenset(args.reason),
        task_types=frozenset(args.task_types),
        error_classes=frozenset(args.error_class),
        older_than=args.older_than,
        newer_than=args.newer_than,
        everything=getattr(args, "all", False),
    )


def run(args: argparse.Namespace, settings: Settings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
        ask: Callable[[str], bool] | None = None) -> int:
    pools = args.pools or sorted(registered_pools())
    if not pools:
        raise ConfigError("no pools installed: name one with --pool")
    # Every installed pool by default: those never deployed on this broker have no queue to read.
    dlq = DeadLetters(settings, pools, name="warren-cli-dlq", skip_missing=not args.pools)
    if args.action == "list":
        listing = dlq.listing(selection(args), limit=args.limit)
        if args.json:
            print(json.dumps(listing.as_json(), indent=2), file=out)
            return 0
        print(f"{'pool':<14} {'dead':>6}  by reason", file=out)
        for line in counts_text(listing.counts):
            print(line, file=out)
        if listing.entries:
            print(file=out)
            print(f"{'id':<34} {'pool':<12} {'task':<14} {'reason':<18} {'error':<20} dead-lettered at", file=out)
            for e in listing.entries:
                print(f"{e.id:<34} {e.pool:<12} {e.task_type or '-':<14} {e.reason:<18} "
                      f"{e.error_class or '-':<20} {e.summary()['dead_lettered_at'] or '-'}", file=out)
        return 0
    if args.action == "show":
        entry = dlq.show(args.id)
        if entry is None:
            print(f"warren: no dead letter {args.id!r} in {', '.join(dlq.queue_of(p) for p in dlq.pools)}", file=err)
            return EXIT_NOT_FOUND
        if args.json:
            print(json.dumps(entry.details(), indent=2), file=out)
        else:
            _print_entry(entry, out)
        return 0
    chosen = selection(args).require()
    bar = _Bar(err, "replay" if args.action == "replay" else "purge")
    if args.action == "replay":
        outcome = dlq.replay(chosen, dry_run=args.dry_run, rate=args.rate, on_progress=bar.update)
    else:
        if not args.yes and not args.dry_run:
            preview = dlq.purge(chosen, dry_run=True)
            if not preview.count:
                print("nothing to purge", file=out)
                return 0
            question = f"delete {preview.count} dead letter(s) for good ({_ids(preview.ids)})? [y/N] "
            if not (ask or _ask)(question):
                print("nothing purged", file=err)
                return 1
            # exactly what was shown, should more have arrived meanwhile
            chosen = Selection(ids=frozenset(preview.ids), everything=True)
        outcome = dlq.purge(chosen, dry_run=args.dry_run, on_progress=bar.update)
    bar.close()
    _print_outcome(outcome, out)
    return 1 if outcome.stopped else 0


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError("purge asks before deleting: run it in a terminal, or pass --yes")
    return input(question).strip().lower() in ("y", "yes")


def _ids(ids: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _print_outcome(outcome: Outcome, out: TextIO) -> None:
    pools = ", ".join(f"{pool} {n}" for pool, n in outcome.by_pool.items()) or "none"
    print(f"{outcome.action} {outcome.count} dead letter(s) ({pools}); {outcome.kept} left as they were", file=out)
    for message_id in outcome.ids:
        print(f"  {message_id}", file=out)
    if outcome.stopped:
        print(f"stopped early: {outcome.stopped} (it is still in its dead-letter queue)", file=out)


def _print_entry(entry: Entry, out: TextIO) -> None:
    d = entry.details()
    for key in ("id", "pool", "task_type", "correlation_id", "reason", "error_class", "error_message", "attempts",
                "dead_lettered_at", "published_at", "by_broker", "content_type", "body_bytes"):
        print(f"{key:<18} {d[key] if d[key] is not None else '-'}", file=out)
    print("\nattempt history:", file=out)
    for h in d["history"] or [{"attempt": "-", "at_ms": None, "error": "(none recorded)"}]:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h["at_ms"] / 1000)) if h.get("at_ms") else "-"
        print(f"  attempt {h.get('attempt')}  {at}  {h.get('error')}", file=out)
    if d["replay_history"]:
        print("\nreplays:", file=out)
        for r in d["replay_history"]:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["at_ms"] / 1000)) if r.get("at_ms") else "-"
            print(f"  {at}  after {r.get('reason')} ({r.get('attempts')} attempt(s))", file=out)
    print("\nheaders:", file=out)
    for key, value in sorted(d["headers"].items()):
        print(f"  {key}: {json.dumps(jsonable(value))}", file=out)
    body = d["body"]
    print(f"\nbody ({body['encoding']}):", file=out)
    print(json.dumps(body["data"], indent=2) if body["encoding"] == "json" else body["data"], file=out)


class _Bar:
    """Progress on standard error: a bar redrawn in place on a terminal (ten times a second at
    most), else a line a second; always a last line."""

    WIDTH = 30

    def __init__(self, stream: TextIO, verb: str) -> None:
        self.stream = stream
        self.verb = verb
        self.live = stream.isatty()
        self.drawn_at = time.monotonic()
        self.last: Progress | None = None

    def update(self, progress: Progress) -> None:
        self.last = progress
        if time.monotonic() - self.drawn_at >= (0.1 if self.live else 1.0):
            self._draw(progress)

    def _draw(self, p: Progress, *, end: str = "") -> None:
        filled = self.WIDTH * p.read // p.depth if p.depth else self.WIDTH
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] read {p.read}/{p.depth}, {self.verb} {p.done}"
        self.stream.write(f"\r{line}{end}" if self.live else f"{line}\n")
        self.stream.flush()
        self.drawn_at = time.monotonic()

    def close(self) -> None:
        if self.last is not None:
            self._draw(self.last, end="\n")
