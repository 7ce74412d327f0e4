"""Structured logging: every record about a step carries its `run_id` and `step_id`.

The ids live in a context variable, set around the work on a step (`step_context`) by
the worker (for each message and each attempt) and copied into every record by
`ContextFilter`, so `log.warning("...")` anywhere under it — dagrelay's own loggers, the
tool's, a library's — gets `record.run_id`, `record.step_id` and `record.attempt`
(None outside a step). A record that sets them itself (`extra={"run_id": ...}`) keeps
its own.

`configure()` sets up the root logger for a dagrelay process (the CLI, a worker):

* `DAGRELAY_LOG_FORMAT=json`: one JSON object per line (`ts`, `level`, `logger`,
  `message`, `run_id`, `step_id`, `attempt`, then `tool`, `outcome`, `duration` where
  the record has them, `process`, `thread`, `exc_info`), for log shippers; otherwise
  (`text`, the default) a line that ends in `[run R step S #A]`.
* `DAGRELAY_LOG_LEVEL` (default WARNING for the CLI, INFO for workers).

An application that embeds dagrelay keeps its own logging: add `ContextFilter()` to its
handlers (and `JsonFormatter()` if it wants JSON) to get the ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

FORMAT_ENV = "DAGRELAY_LOG_FORMAT"
LEVEL_ENV = "DAGRELAY_LOG_LEVEL"
TEXT_FORMAT = (
    "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] "
    "%(message)s%(dagrelay)s"
)

# (run_id, step_id, attempt) of the step this thread or task is working on.
_current: contextvars.ContextVar[tuple[str | None, str | None, int | None]] = (
    contextvars.ContextVar("dagrelay_step", default=(None, None, None))
)
_FIELDS = ("run_id", "step_id", "attempt")
# Fields a record may carry as `extra=` that the JSON lines include when set (a
# worker's line per attempt: its tool, outcome and duration in seconds).
EXTRA_FIELDS = ("tool", "outcome", "duration")


def current() -> tuple[str | None, str | None, int | None]:
    """The (run_id, step_id, attempt) being worked on here, or Nones."""
    return _current.get()


def bind(
    run_id: str | None, step_id: str | None = None, attempt: int | None = None
) -> contextvars.Token[tuple[str | None, str | None, int | None]]:
    """Set the step being worked on; returns the token for `unbind`."""
    return _current.set((run_id, step_id, attempt))


def unbind(token: contextvars.Token[tuple[str | None, str | None, int | None]]) -> None:
    """Restore what `bind` replaced."""
    try:
        _current.reset(token)
    except ValueError:  # a token from another context: leave a clean slate instead
        _current.set((None, None, None))


@contextmanager
def step_context(
    run_id: str | None, step_id: str | None = None, attempt: int | None = None
) -> Iterator[None]:
    """Log records made inside carry these ids."""
    token = bind(run_id, step_id, attempt)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Adds `run_id`, `step_id`, `attempt` (and a `dagrelay` text suffix) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _current.get()
        for name, value in zip(_FIELDS, ids, strict=True):
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        record.dagrelay = _suffix(record)
        return True


def _suffix(record: logging.LogRecord) -> str:
    run_id = getattr(record, "run_id", None)
    if run_id is None:
        return ""
    text = f" [run {run_id}"
    step_id = getattr(record, "step_id", None)
    if step_id is not None:
        text += f" step {step_id}"
        attempt = getattr(record, "attempt", None)
        if attempt is not None:
            text += f" #{attempt}"
    return text + "]"


class TextFormatter(logging.Formatter):
    """Dramatiq's line format, ending in `[run R step S #A]` when a step is known."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "dagrelay"):
            record.dagrelay = _suffix(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the step's ids."""

    def format(self, record: logging.LogRecord) -> str:
        ids = _current.get()
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in zip(_FIELDS, ids, strict=True):
            own = getattr(record, name, None)
            data[name] = own if own is not None else value
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        data["process"] = record.process
        data["thread"] = record.threadName
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = record.stack_info
        return json.dumps(data, default=str, ensure_ascii=False)


def log_format(env: dict[str, str] | None = None) -> str:
    """`json` or `text`, from `DAGRELAY_LOG_FORMAT`."""
    value = (env if env is not None else os.environ).get(FORMAT_ENV, "").strip().lower()
    return "json" if value == "json" else "text"


def make_formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter for `fmt` (`json` / `text`; default from the environment)."""
    return JsonFormatter() if (fmt or log_format()) == "json" else TextFormatter()


def configure(
    level: int | str | None = None,
    fmt: str | None = None,
    stream: TextIO | None = None,
    *,
    default_level: int | None = logging.WARNING,
) -> logging.Logger:
    """Make the root logger's handlers dagrelay's: step ids on every record, the format
    from `fmt` or `DAGRELAY_LOG_FORMAT`. Adds a stream handler (stderr) if there is none.

    The level: `level`, else `DAGRELAY_LOG_LEVEL`, else `default_level` (None: leave the
    root logger's level as it is). Safe to call more than once. Returns the root logger.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(stream or sys.stderr))
    formatter = make_formatter(fmt)
    for handler in root.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        handler.setFormatter(formatter)
    wanted = level if level is not None else os.environ.get(LEVEL_ENV) or default_level
    if wanted is not None:
        try:
            root.setLevel(wanted.upper() if isinstance(wanted, str) else wanted)
        except ValueError:  # e.g. DAGRELAY_LOG_LEVEL=loud: say so, then use the default
            logging.getLogger("dagrelay").warning(
                "%s=%r is not a log level (use DEBUG, INFO, WARNING or ERROR)", LEVEL_ENV, wanted
            )
            root.setLevel(default_level or logging.WARNING)
    return root


__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "bind",
    "configure",
    "current",
    "log_format",
    "step_context",
    "unbind",
]
