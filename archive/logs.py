"""Logs: one event a line on stderr, as JSON (the default) or as readable text.

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``; a request's
line (``archive.access``) adds ``request_id``, ``tenant`` (once authenticated), ``route`` (the
route's name, never its path or query string), ``method``, ``status`` and ``duration_ms``. Any
other log call may add those fields with ``extra=``.

No personal data: the project's messages name ids, counts and types, never numbers, names,
emails, postcodes or transcript text. Two things here hold the line for everyone else:

- an exception is written as its type and frames (file, line, function), never its message,
  which may quote a value (a database error quotes the row; a parser quotes its input);
- libraries that log values at DEBUG or INFO (SQLAlchemy's statements and rows, aiosqlite's
  calls with their parameters, botocore's requests with their signed headers) are held at
  WARNING whatever ``log_level`` says: DEBUG is for this project's own loggers.
"""

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from archive.errors import ConfigurationError

FORMATS = ("json", "text")
# Fields a record may carry (``extra=``) that the formatters write, in this order.
FIELDS = ("request_id", "tenant", "route", "method", "status", "duration_ms")
# Libraries whose DEBUG or INFO records carry values (SQL parameters, result rows, request
# headers and bodies): never below WARNING.
QUIET = ("sqlalchemy", "aiosqlite", "asyncpg", "alembic", "botocore", "aiobotocore", "boto3",
         "s3transfer", "urllib3", "multipart", "PIL", "jinja2", "moto")
_MAX_FRAMES = 30  # the innermost ones: where it failed

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def parse_level(name: str) -> int:
    """The ``logging`` level of a ``log_level`` setting (case ignored)."""
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise ConfigurationError(
            f"setting log_level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, not {name!r}")
    return level


def exception_fields(exc_info: ExcInfo | tuple[None, None, None]) -> dict[str, Any]:
    """An exception as its type and frames, innermost last; its cause's type (``from``) or
    context's type too. Never the message: it may quote personal data."""
    kind, exc, tb = exc_info
    if kind is None or exc is None:
        return {}
    frames = [{"file": f.filename, "line": f.lineno, "function": f.name}
              for f in traceback.extract_tb(tb)[-_MAX_FRAMES:]]
    out: dict[str, Any] = {"type": _type_name(kind), "frames": frames}
    linked = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if linked is not None:
        out["cause"] = _type_name(type(linked))
    return out


def _type_name(kind: type[BaseException]) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _time(record: logging.LogRecord) -> str:
    at = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    return at.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _time(record), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = exception_fields(record.exc_info)
        if record.stack_info:  # frames of code, as stack_info=True asked: no values in them
            out["stack"] = record.stack_info
        # Not ASCII-escaped: a grep for a name with an accent must find it if it ever leaks.
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """A readable line: time, level, logger, message, then the request fields as key=value;
    an exception's type and frames follow on indented lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {record.name} {record.getMessage()}"
        extras = [f"{name}={getattr(record, name)}" for name in FIELDS
                  if getattr(record, name, None) is not None]
        if extras:
            line += " [" + " ".join(extras) + "]"
        if record.exc_info:
            info = exception_fields(record.exc_info)
            if info:
                cause = f" (from {info['cause']})" if "cause" in info else ""
                line += f"\n  {info['type']}{cause}, innermost frame last:"
                line += "".join(f"\n    {f['file']}:{f['line']} in {f['function']}"
                                for f in info["frames"])
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ConfigurationError(f"setting log_format: expected 'json' or 'text', not {log_format!r}")


def configure(log_level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) in ``log_format``, this project's loggers
    from ``log_level`` up and the libraries in ``QUIET`` from WARNING up. Replaces any handler
    the root logger had (calling it twice is harmless). Python warnings become log records too,
    so that stderr stays one format."""
    level = parse_level(log_level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
