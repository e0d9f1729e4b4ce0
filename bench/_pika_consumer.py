"""Raw pika consumer, the baseline for the Warren worker: ``python -m bench._pika_consumer``.

BlockingConnection, ``basic_qos(prefetch)``, ``basic_consume`` and one ``basic_ack`` per message,
with a no-op handler. Exits after the N-th ack and prints ``{"done_at": <time.monotonic()>}``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pika


class _Counter:
    def __init__(self, count: int) -> None:
        self.count = count
        self.acked = 0
        self.done_at: float | None = None

    def on_message(self, channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        self.acked += 1
        if self.acked == self.count:
            self.done_at = time.monotonic()
            channel.stop_consuming()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._pika_consumer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)

    counter = _Counter(args.count)
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=args.prefetch)
    channel.basic_consume(args.queue, counter.on_message, auto_ack=False)
    channel.start_consuming()
    connection.close()
    print(json.dumps({"done_at": counter.done_at, "acked": counter.acked}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
