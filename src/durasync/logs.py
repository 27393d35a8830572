"""Logging of ``durasync serve``: text or JSON lines, access lines, lifecycle lines.

:func:`configure` sets up the root logger once (``--log-format text|json``, ``--log-level``);
uvicorn's loggers propagate to it. Every line is one record:

- **text**: ``2026-12-07T12:00:00.123Z INFO durasync.server: store opened (embedded ...)``;
- **json**: one object per line with ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``
  and the record's structured fields (``event`` and, for access lines, the fields below).

**Access lines** (logger ``durasync.access``, level INFO): one per HTTP request and one per
WebSocket connection, written when it ends, with ``event="access"``, ``id`` (request id,
unique per process), ``method``, ``route`` (the route *template*, e.g. ``/v1/stream/{path}``:
never the raw path or query string), ``status`` (0 when no response was started; the close
code for a WebSocket), ``duration_ms`` and ``bytes`` (response body bytes; not counted for
WebSockets). Nothing from request headers or query strings is logged, so bearer tokens
(``Authorization`` or ``?token=``) never reach a log. Other libraries' lines pass a redaction
filter on the way out (:class:`RedactTokens`): uvicorn's WebSocket line names the request
target, query string included, so ``token=<value>`` and ``Bearer <value>`` are replaced by
``[redacted]`` in every record.

**Lifecycle lines** carry ``event``: ``listening``, ``store_opened``, ``shutdown``,
``room_loaded``, ``room_evicted``; the Redis store logs ``redis at ... lost`` /
``regained`` (password redacted).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from durasync.metrics import Metrics

__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "RequestLog",
    "TextFormatter",
    "configure",
    "new_request_id",
]

ACCESS_LOGGER: Final = "durasync.access"
#: Attributes every LogRecord has; anything else set through ``extra=`` is a field.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)

_ids = itertools.count(1)
_PROCESS: Final = f"{os.getpid():x}"


#: ``token=<value>`` in a query string, ``Bearer <value>`` in a header echoed by a library.
_SECRETS: Final = re.compile(r"(?i)(token=|bearer\s+)[^\s&\"'\]]+")


class RedactTokens(logging.Filter):
    """Replaces bearer tokens in every record's message with ``[redacted]`` (all handlers of
    :func:`configure` carry it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _SECRETS.search(message) is not None:
            record.msg = _SECRETS.sub(r"\1[redacted]", message)
            record.args = None
        return True


def new_request_id() -> str:
    """A request id unique within this process's life: ``<pid hex>-<counter hex>``."""
    return f"{_PROCESS}-{next(_ids):x}"


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(out, enc_hook=str).decode()


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <message>``; access lines are ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created)} {record.levelname} {record.name}: "
        line += record.getMessage()
        if record.name == ACCESS_LOGGER:
            fields = _fields(record)
            fields.pop("event", None)
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(fmt: str = "text", level: str = "warning") -> None:
    """Send every log record to stderr in ``fmt`` (``text`` or ``json``) from ``level`` up.

    Raises:
        ValueError: an unknown format or level.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn's loggers: no handlers of their own, so their lines take our format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


class RequestLog:
    """Counts and logs every finished HTTP request (the server's request observer).

    Given to the connection layer (:func:`durasync.httpserver.bounded_protocol`), which calls
    :meth:`request_done` when a request's ASGI task ends. ``route`` is the Starlette route's
    template when the router matched one, ``{stream_prefix}/{path}`` for the streams fast
    path and ``unmatched`` otherwise, so labels and lines never carry a raw path.
    """

    def __init__(self, metrics: Metrics, stream_prefix: str = "/v1/stream") -> None:
        self.metrics = metrics
        self.access = logging.getLogger(ACCESS_LOGGER)
        self._stream_prefix = stream_prefix.rstrip("/") + "/"
        self._stream_route = self._stream_prefix + "{path}"

    @property
    def active(self) -> bool:
        """Whether requests need observing at all (metrics on, or access lines enabled)."""
        return self.metrics.enabled or self.access.isEnabledFor(logging.INFO)

    def route_of(self, scope: Mapping[str, object]) -> str:
        """The route template that served ``scope`` (bounded set; module docstring)."""
        path = scope.get("path", "")
        # The streams fast path (create_app) serves every path under the prefix.
        if (
            self._stream_prefix != "/"
            and isinstance(path, str)
            and path.startswith(self._stream_prefix)
        ):
            return self._stream_route
        template = getattr(scope.get("route"), "path", None)
        if isinstance(template, str):
            return template
        return "unmatched"

    def request_done(self, scope: dict[str, Any], status: int, nbytes: int, seconds: float) -> None:
        """One request ended with ``status`` (0: no response started) after ``seconds``."""
        route = self.route_of(scope)
        self.metrics.request(route, status)
        access = self.access
        if access.isEnabledFor(logging.INFO):
            access.info(
                "%s %s %d",
                scope.get("method", "-"),
                route,
                status,
                extra={
                    "event": "access",
                    "id": new_request_id(),
                    "method": scope.get("method", "-"),
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "bytes": nbytes,
                },
            )

    def refused(self, status: int, code: str) -> None:
        """The connection layer refused a request before any app saw it (408, 431, 503)."""
        self.metrics.request("refused", status)
        self.metrics.error("http", code)
        if self.access.isEnabledFor(logging.INFO):
            self.access.info(
                "refused %d %s",
                status,
                code,
                extra={
                    "event": "access",
                    "id": new_request_id(),
                    "method": "-",
                    "route": "refused",
                    "status": status,
                    "duration_ms": 0.0,
                    "bytes": 0,
                },
            )

    def websocket_done(self, route: str, close_code: int, seconds: float) -> None:
        """One WebSocket connection on ``route`` (a template) ended with ``close_code``."""
        if self.access.isEnabledFor(logging.INFO):
            self.access.info(
                "WS %s %d",
                route,
                close_code,
                extra={
                    "event": "access",
                    "id": new_request_id(),
                    "method": "WS",
                    "route": route,
                    "status": close_code,
                    "duration_ms": round(seconds * 1000, 3),
                    "bytes": 0,
                },
            )
