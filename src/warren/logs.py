"""Logging set-up for Warren's commands: plain lines, or one JSON object per line for log shippers.

With ``WARREN_LOG_FORMAT=json`` every line carries the same keys, so a log pipeline can index them
without guessing: ``time``, ``level``, ``logger``, ``message`` and the message it is about,
``message_id``, ``correlation_id``, ``pool``, ``task``, ``attempt``, ``outcome`` and
``duration_ms`` (null on lines about no message). The worker's line per settled delivery passes
them in the ``warren`` attribute of its record; a handler's ``ctx.logger`` does the same, with
``outcome`` "running" and the time it has run so far.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from warren.config import Settings

FIELDS = ("message_id", "correlation_id", "pool", "task", "attempt", "outcome", "duration_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with every key of ``FIELDS`` (null when it does not apply)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "warren", None) or {}
        message = record.getMessage().removeprefix(getattr(record, "task_prefix", ""))
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            **{key: fields.get(key) for key in FIELDS},
            **{key: value for key, value in fields.items() if key not in FIELDS},
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(settings: Settings) -> None:
    """Log to standard error at ``WARREN_LOG_LEVEL`` in ``WARREN_LOG_FORMAT``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler])  # a no-op where logging is set up already
    # pika logs every connection failure with a traceback; Warren reports them in one line.
    logging.getLogger("pika").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.CRITICAL)
