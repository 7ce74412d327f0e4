"""What a worker knows about the step it is on, for logs and traces.

* `ObservabilityMiddleware` (a Dramatiq middleware, added by `workers.broker.setup`):
  around every step message it makes the message's trace context current (the W3C
  `traceparent` the sender put in `message.options`) and binds the message's run and
  step ids for logging; in a worker process started by Dramatiq's CLI it also makes the
  process's log handlers dagrelay's (`executor.observability.logs.configure`: ids on every record,
  `DAGRELAY_LOG_FORMAT=json`).
* `step_scope(...)`: around each attempt the runtime runs (a message may run several
  steps in place): the attempt's OpenTelemetry span, and its ids on every log record.

Without OpenTelemetry installed only the logging part does anything.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from executor.backends.redis.messages import ACTOR_NAME
from executor.observability import logs, tracing


class ObservabilityMiddleware(Middleware):
    """Trace context and log ids for each step message this worker processes."""

    def __init__(self) -> None:
        self._local = threading.local()

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # Only Dramatiq's CLI emits this, once it has set up the process's logging.
        logs.configure(default_level=None)

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        stack = self._stack()
        trace_token = tracing.attach(message.options)
        log_token = None
        if message.actor_name == ACTOR_NAME and len(message.args) >= 3:
            run_id, step_id, attempt = message.args[:3]
            log_token = logs.bind(str(run_id), str(step_id), _int(attempt))
        stack.append((trace_token, log_token))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._pop()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._pop()

    def _stack(self) -> list[tuple[object | None, Any]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _pop(self) -> None:
        stack = self._stack()
        if not stack:
            return
        trace_token, log_token = stack.pop()
        if log_token is not None:
            logs.unbind(log_token)
        tracing.detach(trace_token)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def step_scope(
    run_id: str, step_id: str, attempt: int, worker: str | None = None, tool: str | None = None
) -> Iterator[None]:
    """One attempt: its span (current while it runs and coordinates, so the messages it
    sends carry it) and its ids on log records."""
    with (
        logs.step_context(run_id, step_id, attempt),
        tracing.attempt_span(run_id, step_id, attempt, worker=worker, tool=tool),
    ):
        yield


__all__ = ["ObservabilityMiddleware", "step_scope"]
