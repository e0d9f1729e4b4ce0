"""Warren's own small exception hierarchy.

pika's exceptions never leave ``warren.broker``: they are translated at that boundary into these,
so callers (worker, producer, CLI) decide on retry or exit without knowing the client library.
"""

from __future__ import annotations


class WarrenError(Exception):
    """Base class of every error Warren raises on purpose."""


class ConfigError(WarrenError):
    """A setting is missing or invalid; the message names the setting and never its secret value."""


class BrokerUnavailable(WarrenError):
    """The broker cannot be reached or the connection was lost; retrying later may succeed."""


class PublishRefused(WarrenError):
    """The broker did not take responsibility for a published message."""


class Unroutable(PublishRefused):
    """A mandatory publish matched no queue and was returned by the broker."""


class Unpublishable(PublishRefused):
    """AMQP cannot carry the message as built (an id over 255 bytes, a header value out of range)."""


class Nacked(PublishRefused):
    """The broker negatively confirmed a publish (for example a full queue with reject-publish)."""


class TopologyError(WarrenError):
    """Declaring the topology failed, typically because an entity exists with other arguments."""


class TaskError(Exception):
    """Raised by handlers; the subclass says what the runtime does with the message."""


class RetryableError(TaskError):
    """A transient failure: retry with backoff, then dead-letter when the attempts run out.

    Any exception a handler raises that is not a ``PermanentError`` is treated the same way.
    ``delay`` (seconds) overrides the backoff for this retry, e.g. a rate limit's Retry-After.
    """

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        self.delay = delay


class PermanentError(TaskError):
    """The task can never succeed (for example a business rule says no): dead-letter at once."""


class RequestTimeout(WarrenError):
    """A request/reply call got no reply within its timeout."""
