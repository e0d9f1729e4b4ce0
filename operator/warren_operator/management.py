"""The client of RabbitMQ's management HTTP API: where it is, how to log in, the three reads the
operator makes, and what each failure means.

Apart from ``stats`` (the values the replies become) because this is the module that does I/O and
holds a password: ``fetch_queue_stats`` reads one queue's counts and rates for the scaling
decision, ``fetch_consumers`` who holds its unacked messages for the choice of pods on scale-down.
Every failure becomes a ``MetricsError`` whose ``temporary`` says what the operator does next:

- ``BrokerUnreachable``, ``StatsNotReady``: temporary; hold the replicas and try again;
- ``QueueNotFound``, ``Unauthorized``, ``UnexpectedResponse``: someone must change something.

Credentials never leave this module: messages name the URL as ``http://user:***@host:port/...``
(``warren.config.redact_url``, the project's one redaction), and errors are raised outside the
``except`` that caught urllib's, so no ``__context__`` keeps its frames (and the request's
Authorization header) alive. Redirects are refused, since urllib would resend that header wherever
they point; proxy variables are ignored.

The queue is read with ``msg_rates_age``/``msg_rates_incr`` of 5 s (see ``stats`` for why). Who
consumes takes three reads: the queue's ``consumer_details``, ``/api/vhosts/{vhost}/connections``
and ``/api/vhosts/{vhost}/channels``. A user with only the ``management`` tag sees its own
connections alone: the operator's needs ``monitoring``.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, NamedTuple, TypeVar
from urllib.parse import quote, unquote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, FilePath, SecretStr, ValidationError, field_validator, model_validator

from warren.config import redact_url
from warren_operator.stats import Consumer, QueueStats, consumers_from_json, queue_stats_from_json

_QUERY = urlencode({
    "columns": "messages_ready,messages_unacknowledged,consumers,"
               "message_stats.publish_details.rate,message_stats.ack_details.rate",
    "msg_rates_age": "5",  # the management plugin keeps queue samples 5 s apart
    "msg_rates_incr": "5",
})
_CONSUMERS_QUERY = urlencode({"columns": "consumer_details.channel_details.name,"
                                         "consumer_details.channel_details.connection_name,"
                                         "consumer_details.channel_details.peer_host"})
_CHANNELS_QUERY = urlencode({"columns": "name,messages_unacknowledged"})
_CONNECTIONS_QUERY = urlencode({"columns": "name,user_provided_name"})
_MAX_BODY = 64 * 1024  # a single queue's selected columns are a few hundred bytes
_MAX_LIST_BODY = 8 * 1024 * 1024  # a vhost's channels or connections, a queue's consumers: ~100 bytes each
_T = TypeVar("_T")
_DEFAULT_MANAGEMENT = {"amqp": ("http", 15672), "amqps": ("https", 15671), "http": ("http", None),
                       "https": ("https", None)}


# --- errors ---------------------------------------------------------------------------------


class MetricsError(Exception):
    """The queue's stats could not be read; ``url`` is the request's URL with credentials masked."""

    temporary: ClassVar[bool] = False

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class BrokerUnreachable(MetricsError):
    """No answer: connection refused, timeout, DNS, TLS, a broken reply, or a 5xx. Temporary."""

    temporary = True


class StatsNotReady(MetricsError):
    """The broker answered but has not reported the queue's counts yet (a new queue). Temporary."""

    temporary = True


class QueueNotFound(MetricsError):
    """404: no such queue, or no such vhost."""

    def __init__(self, *, url: str, vhost: str, queue: str) -> None:
        super().__init__(f"queue {queue!r} not found in vhost {vhost!r} (404 from {url})", url=url, status=404)
        self.vhost = vhost
        self.queue = queue


class Unauthorized(MetricsError):
    """401/403: wrong credentials, or a user without the monitoring tag or access to the vhost."""


class UnexpectedResponse(MetricsError):
    """Any other status (a redirect, a 400), or a body that is not the queue's JSON."""


# --- configuration --------------------------------------------------------------------------


class ManagementConfig(BaseModel):
    """Where the management API is and how to log in. Its repr never shows the password."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    base_url: str  # http(s)://host:port[/path-prefix], without credentials
    username: str
    password: SecretStr
    ca_file: FilePath | None = None  # PEM bundle trusted instead of the system's, for https

    @field_validator("base_url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        if "@" in value:
            raise ValueError("must not embed credentials: use parse_broker_url, or username and password")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value

    @field_validator("username")
    @classmethod
    def _basic_auth_user(cls, value: str) -> str:
        if not value or ":" in value:
            raise ValueError("must be non-empty and without ':' (HTTP basic authentication)")
        return value

    @model_validator(mode="after")
    def _ca_file_needs_https(self) -> ManagementConfig:
        if self.ca_file is not None and not self.base_url.startswith("https:"):
            raise ValueError("ca_file is only used with an https:// base_url")
        return self

    @property
    def display_url(self) -> str:
        """``base_url`` naming the user, with the password masked: for messages and logs."""
        scheme, _, rest = self.base_url.partition("://")
        return f"{scheme}://{quote(self.username, safe='')}:***@{rest.rstrip('/')}"


class ParsedBrokerUrl(NamedTuple):
    config: ManagementConfig
    display: str  # the URL as given, password masked
    vhost: str | None  # an AMQP URL's vhost; None for a management URL


def parse_broker_url(url: str, *, management_port: int | None = None,
                     ca_file: Path | None = None) -> ParsedBrokerUrl:
    """The management config of an AMQP URL (``amqp://u:p@host:5672/vhost``: http on 15672,
    ``amqps``: https on 15671, unless ``management_port``) or of a management URL with
    credentials (``https://u:p@host:15671``). Without credentials: guest/guest, as AMQP.
    ValueError, naming the masked URL, if it cannot be used."""
    if "://" not in url:  # redact_url finds no user information without it: show nothing
        raise ValueError("invalid broker URL (not shown): needs scheme://host, the scheme amqp, amqps, "
                         "http or https")
    display = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid broker URL {display}: cannot read its host and port") from None
    if parts.scheme not in _DEFAULT_MANAGEMENT or not parts.hostname:
        raise ValueError(f"invalid broker URL {display}: needs amqp, amqps, http or https and a host")
    scheme, default_port = _DEFAULT_MANAGEMENT[parts.scheme]
    is_amqp = parts.scheme in ("amqp", "amqps")
    if not is_amqp and (parts.query or parts.fragment):
        raise ValueError(f"invalid broker URL {display}: a management URL has no query or fragment")
    port = management_port or (default_port if is_amqp else port)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    prefix = "" if is_amqp else parts.path.rstrip("/")
    try:
        config = ManagementConfig(
            base_url=f"{scheme}://{host}" + (f":{port}" if port else "") + prefix,
            username=unquote(parts.username) if parts.username is not None else "guest",
            password=SecretStr(unquote(parts.password) if parts.password is not None else "guest"),
            ca_file=ca_file)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"invalid broker URL {display}: {problems}") from None
    return ParsedBrokerUrl(config, display, _amqp_vhost(parts.path) if is_amqp else None)


def _amqp_vhost(path: str) -> str:
    return "/" if path in ("", "/") else unquote(path[1:])


# --- fetch ----------------------------------------------------------------------------------


def fetch_queue_stats(client_config: ManagementConfig, vhost: str, queue: str, *,
                      current_replicas: int, timeout: float) -> QueueStats:
    """The queue's stats, with the Deployment's ``current_replicas``, or a ``MetricsError``.

    ``timeout`` bounds the connection and each read (urllib's semantics); the reply is small.
    """
    path = _queue_path(vhost, queue)
    stats = _fetch(client_config, path, _QUERY, lambda payload: queue_stats_from_json(
        payload, current_replicas=current_replicas), what="the queue's JSON", timeout=timeout, vhost=vhost,
        queue=queue)
    if stats is None:
        shown = client_config.display_url + path
        raise StatsNotReady(f"{shown}: the broker has not reported the queue's counts yet (a new queue?)",
                            url=shown, status=200)
    return stats


def fetch_consumers(client_config: ManagementConfig, vhost: str, queue: str, *,
                    timeout: float) -> tuple[Consumer, ...]:
    """Each channel consuming from the queue, with its connection's name and its unacked count,
    or a ``MetricsError``. Three reads, each bounded by ``timeout``."""
    def read(path: str, query: str, what: str) -> object:
        return _fetch(client_config, path, query, lambda payload: payload, what=what, timeout=timeout,
                      vhost=vhost, queue=queue, limit=_MAX_LIST_BODY)

    vhost_path = f"/api/vhosts/{quote(vhost, safe='')}"
    queue_payload = read(_queue_path(vhost, queue), _CONSUMERS_QUERY, "the queue's JSON")
    channels = read(f"{vhost_path}/channels", _CHANNELS_QUERY, "a list of channels")
    connections = read(f"{vhost_path}/connections", _CONNECTIONS_QUERY, "a list of connections")
    try:
        return consumers_from_json(queue_payload, channels, connections)
    except ValueError as e:
        problem = f"unexpected consumer details ({str(e)[:200]})"
    shown = client_config.display_url + vhost_path
    raise UnexpectedResponse(f"{shown}: {problem}", url=shown, status=200)


def _queue_path(vhost: str, queue: str) -> str:
    return f"/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"


def _fetch(config: ManagementConfig, path: str, query: str, parse: Callable[[object], _T], *, what: str,
           timeout: float, vhost: str, queue: str, limit: int = _MAX_BODY) -> _T:
    """``parse`` of the JSON a GET of ``path?query`` answers, or a ``MetricsError`` (an
    ``UnexpectedResponse`` if the body is not JSON or ``parse`` raises ValueError)."""
    shown = config.display_url + path
    status, body = _get(config, config.base_url.rstrip("/") + f"{path}?{query}", shown=shown, timeout=timeout,
                        limit=limit)
    if status != 200:
        raise _status_error(status, body, shown=shown, vhost=vhost, queue=queue)
    try:
        return parse(json.loads(body))
    except ValueError as e:  # JSONDecodeError is one
        problem = f"not {what} ({type(e).__name__}: {str(e)[:200]})"
    raise UnexpectedResponse(f"{shown}: {problem}", url=shown, status=status)


# --- HTTP -----------------------------------------------------------------------------------


def _get(config: ManagementConfig, url: str, *, shown: str, timeout: float,
         limit: int = _MAX_BODY) -> tuple[int, bytes]:
    """(status, at most ``limit`` bytes of body) of a GET, whatever the status; BrokerUnreachable,
    without a cause, when there is no HTTP answer."""
    failure = ""
    try:
        with _opener(config).open(_request(config, url), timeout=timeout) as response:
            return response.status, response.read(limit)
    except urllib.error.HTTPError as e:
        return e.code, _drain(e)
    except (OSError, http.client.HTTPException) as e:
        failure = _describe_failure(e, timeout=timeout)
    raise BrokerUnreachable(f"{shown}: {failure}", url=shown) from None


def _request(config: ManagementConfig, url: str) -> urllib.request.Request:
    credentials = f"{config.username}:{config.password.get_secret_value()}".encode()
    return urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
        "Accept": "application/json"})


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx stays an HTTPError: following it would resend the Authorization header."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _opener(config: ManagementConfig) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), _RefuseRedirects()]
    if config.base_url.startswith("https:"):
        cafile = str(config.ca_file) if config.ca_file is not None else None
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
    return urllib.request.build_opener(*handlers)


def _drain(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read(_MAX_BODY)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        error.close()


def _describe_failure(error: BaseException, *, timeout: float) -> str:
    """What went wrong, from the exception's class and OS message only: never its arguments."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    match reason:
        case TimeoutError():
            return f"no answer within {timeout:g} s"
        case ConnectionRefusedError():
            return "connection refused (nothing listening?)"
        case socket.gaierror():
            return f"cannot resolve the host name ({reason.strerror})"
        case ssl.SSLCertVerificationError():
            return f"TLS certificate not trusted ({reason.verify_message})"
        case ssl.SSLError():
            return f"TLS failed ({reason.reason})"
        case OSError():
            return reason.strerror or type(reason).__name__
        case str():
            return reason
    return f"broken HTTP reply ({type(reason).__name__})"


def _status_error(status: int, body: bytes, *, shown: str, vhost: str, queue: str) -> MetricsError:
    reason = _broker_reason(body)
    if status == 404:
        return QueueNotFound(url=shown, vhost=vhost, queue=queue)
    if status in (401, 403):
        return Unauthorized(f"{shown}: {status} {reason}: check the user name and password, and that the "
                            f"user has the monitoring or management tag and access to vhost {vhost!r}",
                            url=shown, status=status)
    if status >= 500 or status in (408, 429):
        return BrokerUnreachable(f"{shown}: {status} {reason}", url=shown, status=status)
    return UnexpectedResponse(f"{shown}: {status} {reason}", url=shown, status=status)


def _broker_reason(body: bytes) -> str:
    """The ``reason`` of RabbitMQ's JSON error body; nothing else of a body is ever shown."""
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        return "(no reason given)"
    return str(reason)[:200] if reason else "(no reason given)"
