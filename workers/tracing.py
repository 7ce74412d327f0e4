"""What a worker knows about the step it is on, for logs and traces.

* `ObservabilityMiddleware` (a Dramatiq middleware, added by `workers.broker.setup`):
  around every token message it makes the message's trace context current (the W3C
  `traceparent` the sender put in `message.options`) and binds the message's run id
  for logging; in a worker process started by Dramatiq's CLI it also makes the
  process's log handlers dagrelay's (`executor.observability.logs.configure`: ids on every record,
  `DAGRELAY_LOG_FORMAT=json`).
* `step_scope(...)`: around each attempt the pipeline runs (a message may bring several
  units): the attempt's OpenTelemetry span, and its ids on every log record.

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
        if message.actor_name == ACTOR_NAME and message.args:
            log_token = logs.bind(str(message.args[0]))
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


@contextlib.contextmanager
def step_scope(
    run_id: str,
    unit: str,
    attempt: int,
    worker: str | None = None,
    tool: str | None = None,
    started_at: str | None = None,
) -> Iterator[None]:
    """One attempt of a unit (a step, or an item `step[i]`): its span (current while it
    runs and coordinates, so the messages it sends carry it; it starts when the attempt's
    record says it did) and its ids on log records."""
    step, _, rest = unit.partition("[")
    item = int(rest[:-1]) if rest else None
    with (
        logs.step_context(run_id, unit, attempt),
        tracing.attempt_span(
            run_id, step, attempt, worker=worker, tool=tool, item=item, started_at=started_at
        ),
    ):
        yield


__all__ = ["ObservabilityMiddleware", "step_scope"]
