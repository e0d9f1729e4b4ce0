"""Header values pika cannot decode, turned into a value Warren can dead-letter.

A message's headers are decoded by pika on the connection's I/O thread, before Warren sees the
message. Two legal AMQP values make that decoding raise: a timestamp past the year 9999
(``datetime.fromtimestamp`` overflows, ``OSError 75``) and tables or arrays nested deeper than
Python's recursion limit. Either would abort the whole connection, and the broker would redeliver
the message to the next worker, forever. ``install`` makes pika decode such a value as an
``UndecodableValue`` (text that says what it was) instead, so the message reaches the worker, which
dead-letters it as ``malformed_headers`` with those cleaned headers.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pika.data

MAX_DEPTH = 64  # nested tables and arrays deeper than this are not decoded

_original_decode_value: Callable[[bytes, int], tuple[Any, int]] = pika.data.decode_value
_nesting = threading.local()  # pika decodes on whichever thread owns the connection


class UndecodableValue(str):
    """A header value that could not be decoded, as text saying what it was."""

    __slots__ = ()


def _decode_value(encoded: bytes, offset: int) -> tuple[Any, int]:
    kind = encoded[offset:offset + 1]
    if kind == b"T":
        (seconds,) = struct.unpack_from(">Q", encoded, offset + 1)
        try:
            return datetime.fromtimestamp(seconds, UTC), offset + 9
        except (OverflowError, OSError, ValueError):
            return UndecodableValue(f"timestamp {seconds} is out of range"), offset + 9
    if kind in (b"F", b"A"):
        depth = getattr(_nesting, "depth", 0)
        if depth >= MAX_DEPTH:
            (length,) = struct.unpack_from(">I", encoded, offset + 1)
            return UndecodableValue(f"nested deeper than {MAX_DEPTH} levels"), offset + 5 + length
        _nesting.depth = depth + 1
        try:
            return _original_decode_value(encoded, offset)
        finally:
            _nesting.depth = depth
    return _original_decode_value(encoded, offset)


def install() -> None:
    """Route pika's header decoding through ``_decode_value`` (idempotent)."""
    pika.data.decode_value = _decode_value


def undecodable(headers: Mapping[str, Any]) -> list[str]:
    """Where the headers hold an ``UndecodableValue``: ``["name: what it was", ...]``."""
    found: list[str] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, UndecodableValue):
            found.append(f"{path}: {value}")
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{path}.{key}", inner)
        elif isinstance(value, list):
            for n, inner in enumerate(value):
                walk(f"{path}[{n}]", inner)

    for key, value in headers.items():
        walk(str(key), value)
    return found
