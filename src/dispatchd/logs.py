"""The process's logging: text or JSON lines on stderr, and the optional HTTP access log.

JSON lines carry ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, ``instance``
(``server.instance``, once the config is read), and when known ``dispatcher`` (set by a
worker's ``extra``), ``http`` (an access-log line's fields) and ``error`` (the traceback), so
that a log shipper needs no parsing rules.
"""

from __future__ import annotations

import json
import logging
import sys
from types import TracebackType
from typing import Any, Literal, TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .timefmt import rfc3339

Format = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# With an instance name, where syslog puts the host name: after the time.
TEXT_FORMAT_INSTANCE = "%(asctime)s {instance} %(levelname)-7s %(name)s: %(message)s"
ACCESS_LOGGER = "dispatchd.access"
_HANDLER_NAME = "dispatchd"
# Record attributes copied into a JSON line when a caller set them through ``extra``.
_EXTRA_FIELDS = ("dispatcher", "http")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, instance: str | None = None) -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.instance is not None:
            line["instance"] = self.instance
        for field in _EXTRA_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["error"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup(level: str, fmt: Format, access: bool = False, stream: TextIO | None = None,
          instance: str | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``fmt``.

    Calling it again replaces the handler it installed, so the CLI can log before the config
    is read and switch to the config's format (and ``instance`` name, on every line) after.
    ``access`` lets ``dispatchd.access`` lines through whatever ``level`` is: an operator who
    turned the access log on wants it.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.name = _HANDLER_NAME
    handler.setFormatter(formatter(fmt, instance))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access else logging.NOTSET)
    # watchfiles logs every change it sees at INFO; the reload itself is what operators need.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    # Warnings and uncaught exceptions would otherwise reach stderr as bare text between the
    # JSON lines, and a log shipper would drop or mangle them.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught if fmt == "json" else sys.__excepthook__


def formatter(fmt: Format, instance: str | None = None) -> logging.Formatter:
    """The formatter for ``fmt``, naming ``instance`` on every line when given."""
    if fmt == "json":
        return JsonFormatter(instance)
    if instance is None:
        return logging.Formatter(TEXT_FORMAT)
    return logging.Formatter(TEXT_FORMAT_INSTANCE.format(instance=instance.replace("%", "%%")))


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("dispatchd").critical("uncaught exception", exc_info=(kind, exc, tb))


class AccessLogger(AbstractAccessLogger):
    """One line per HTTP request: method, path, status, bytes sent (headers included), duration
    in milliseconds, remote address.

    aiohttp builds it with the logger given to ``AppRunner(access_log=...)``; see
    ``runner_options``. The line goes out at INFO in the format ``setup`` chose.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        fields = {
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 2),
            "remote": request.remote,
        }
        self.logger.info(
            "%s %s %d %d bytes %.2f ms %s", fields["method"], fields["path"], fields["status"],
            fields["bytes"], fields["duration_ms"], fields["remote"] or "-", extra={"http": fields},
        )

    @property
    def enabled(self) -> bool:
        # aiohttp asks once per connection; skipping the call saves the work of every request.
        return self.logger.isEnabledFor(logging.INFO)


def runner_options(access: bool) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner``: the access log on ``dispatchd.access``, or none."""
    if not access:
        return {"access_log": None}
    return {"access_log_class": AccessLogger, "access_log": logging.getLogger(ACCESS_LOGGER)}
