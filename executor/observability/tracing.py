"""OpenTelemetry spans for runs and attempts (the optional `otel` extra).

* One span per run, on the client: from `submit` until the client sees the run finish
  (`wait()`, or the end of `events()`), named `run <flow>`, with the run's id, flow,
  status and timing as attributes.
* One span per attempt: live in a worker around each claimed attempt (`step <id>`,
  `workers.tracing`), and for the embedded backend built from the attempt's recorded
  times when the run finishes (the run's hot path stays untouched).
* Trace context travels in every step message (`options["traceparent"]`, W3C), so a
  worker's spans join the submitter's trace; steps a worker sends on are children of
  the attempt that unlocked them.

Without `opentelemetry-api` installed every function here is a cheap no-op. Nothing is
exported unless the application configures a `TracerProvider` (the SDK) as usual.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from executor.handle import RunHandle
from executor.result import ExecutionResult
from executor.run.events import RunEvent
from executor.run.records import RunStatus, StepError, StepRecord
from executor.version import __version__

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    AVAILABLE = True
    _PROPAGATOR = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    AVAILABLE = False

if TYPE_CHECKING:
    import concurrent.futures

    from executor.model.spec import FlowSpec

TRACER = "dagrelay"
CONTEXT_KEYS = ("traceparent", "tracestate")
# Attribute names: a `dagrelay.` namespace, as OpenTelemetry asks of libraries.
RUN_ID, STEP_ID, ATTEMPT = "dagrelay.run_id", "dagrelay.step_id", "dagrelay.attempt"
FLOW, FLOW_VERSION, TOOL = "dagrelay.flow", "dagrelay.flow_version", "dagrelay.tool"
WORKER, STATUS, BACKEND = "dagrelay.worker", "dagrelay.status", "dagrelay.backend"
ITEM = "dagrelay.item"


_cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _tracer() -> Any | None:
    """dagrelay's tracer, or None while no real TracerProvider is configured (then
    tracing costs one check per run and per attempt)."""
    global _cached
    # `get_tracer_provider()` looks up an environment variable on every call while no
    # provider is set (tens of µs: a cost per step); the global it fills is read first.
    provider = getattr(trace, "_TRACER_PROVIDER", None)
    if provider is None:
        if not _PROVIDER_FROM_ENV and hasattr(trace, "_TRACER_PROVIDER"):
            return None
        provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    if _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(TRACER, __version__))
    return _cached[1]


def _ns(t: datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1_000_000_000)


# Trace context in messages ------------------------------------------------------------
def inject(options: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add the current span's W3C trace context (`traceparent`, `tracestate`) to a step
    message's options, if a span is active here. Returns `options`."""
    if AVAILABLE and trace.get_current_span().get_span_context().is_valid:
        _PROPAGATOR.inject(options)
    return options


def current_context() -> dict[str, str]:
    """The current span's W3C trace context as message options (empty: no span)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def extract(options: Mapping[str, Any] | None) -> Any:
    """The OpenTelemetry context carried by a message's options, or None."""
    if not AVAILABLE or not options or not options.get("traceparent"):
        return None
    carrier = {k: str(options[k]) for k in CONTEXT_KEYS if options.get(k)}
    return _PROPAGATOR.extract(carrier)


def attach(options: Mapping[str, Any] | None) -> object | None:
    """Make a message's trace context current here; returns a token for `detach`."""
    ctx = extract(options)
    return None if ctx is None else otel_context.attach(ctx)


def detach(token: object | None) -> None:
    """Undo `attach`."""
    if token is not None:
        with contextlib.suppress(Exception):  # a token from another context
            otel_context.detach(token)  # type: ignore[arg-type]


# Attempts (worker side) ----------------------------------------------------------------
@contextlib.contextmanager
def attempt_span(
    run_id: str,
    step_id: str,
    attempt: int,
    *,
    worker: str | None = None,
    tool: str | None = None,
    item: int | None = None,
    started_at: str | None = None,
) -> Iterator[Any]:
    """A span around one attempt of a step (or of one item of a map step), current while
    it runs (None: no tracing); it starts at `started_at` (ISO) when given."""
    tracer = _tracer() if AVAILABLE else None
    if tracer is None:
        yield None
        return
    start_time = _ns(datetime.fromisoformat(started_at)) if started_at else None
    attributes: dict[str, Any] = {RUN_ID: run_id, STEP_ID: step_id, ATTEMPT: attempt}
    if worker:
        attributes[WORKER] = worker
    if tool:
        attributes[TOOL] = tool
    if item is not None:
        attributes[ITEM] = item
    name = f"step {step_id}" if item is None else f"step {step_id}[{item}]"
    with tracer.start_as_current_span(
        name, kind=SpanKind.CONSUMER, attributes=attributes, start_time=start_time
    ) as span:
        yield span


def set_worker(worker: str) -> None:
    """Name where the current (attempt) span's work ran, once known (a pool's thread)."""
    if AVAILABLE:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(WORKER, worker)


def record_error(error: StepError | None) -> None:
    """Mark the current (attempt) span as failed with a step error (None: no-op)."""
    if error is None or not AVAILABLE:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("exception.type", error.type)
        span.set_attribute("exception.message", error.message)
        span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))


# Runs (client side) --------------------------------------------------------------------
class RunSpan:
    """The span of one run, from submit until this client sees the run finish."""

    def __init__(self, span: Any, backend: str) -> None:
        self.span = span
        self.backend = backend
        self._ended = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the run's span current (so the roots' messages carry its context)."""
        with trace.use_span(self.span, end_on_exit=False):
            yield

    def finish(self, result: ExecutionResult | None, error: BaseException | None = None) -> None:
        """End the span with the run's outcome (once; later calls do nothing)."""
        with self._lock:  # held throughout: a second caller returns once it is ended
            if self._ended:
                return
            self._ended = True
            self._finish(result, error)

    def _finish(self, result: ExecutionResult | None, error: BaseException | None) -> None:
        span = self.span
        if result is not None:
            span.set_attribute(STATUS, result.status)
            for name, value in (
                ("dagrelay.wall_time", result.wall_time),
                ("dagrelay.step_time", result.step_time),
                ("dagrelay.critical_path_time", result.critical_path_time),
                ("dagrelay.parallelism", result.parallelism),
            ):
                if value is not None:
                    span.set_attribute(name, float(value))
            if result.critical_path:
                span.set_attribute("dagrelay.critical_path", list(result.critical_path))
            if self.backend == "local":
                record_attempts(self, result)
            if result.status != "succeeded":
                span.set_status(Status(StatusCode.ERROR, result.error or result.status))
        elif error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()


def start_run(run_id: str, flow: FlowSpec, backend: str) -> RunSpan | None:
    """Start the span of a run being submitted; None when nothing would record it."""
    tracer = _tracer() if AVAILABLE else None
    if tracer is None:
        return None
    span = tracer.start_span(
        f"run {flow.name}",
        kind=SpanKind.PRODUCER if backend == "redis" else SpanKind.INTERNAL,
        attributes={
            RUN_ID: run_id,
            FLOW: flow.name,
            FLOW_VERSION: flow.version,
            BACKEND: backend,
            "dagrelay.steps": len(flow.steps),
        },
    )
    if not span.get_span_context().is_valid:
        return None  # no SDK configured: keep the hot path free of tracing work
    # Sampled out still counts: its context tells the workers not to record either.
    return RunSpan(span, backend)


@contextlib.contextmanager
def active(run: RunSpan | None) -> Iterator[None]:
    """`run.active()`, or nothing for no span."""
    if run is None:
        yield
    else:
        with run.active():
            yield


def finish_on(future: concurrent.futures.Future[ExecutionResult], run: RunSpan | None) -> None:
    """End the run's span when its future is done (the embedded backend)."""
    if run is None:
        return

    def done(f: concurrent.futures.Future[ExecutionResult]) -> None:
        try:
            run.finish(f.result())
        except BaseException as exc:
            run.finish(None, exc)

    future.add_done_callback(done)


def record_attempts(run: RunSpan, result: ExecutionResult) -> None:
    """Child spans of the run for every attempt (and map item attempt), from the times
    the embedded backend recorded."""
    if not run.span.is_recording():
        return
    parent = trace.set_span_in_context(run.span)
    tracer = _tracer()
    if tracer is None:
        return
    for rec in result.steps.values():
        _record(tracer, parent, result.run_id, rec.step_id, rec, None)
        for i, child in enumerate(rec.items or ()):
            _record(tracer, parent, result.run_id, rec.step_id, child, i)


def _record(
    tracer: Any, parent: Any, run_id: str, step_id: str, rec: StepRecord, item: int | None
) -> None:
    for a in rec.attempts:
        attributes: dict[str, Any] = {
            RUN_ID: run_id,
            STEP_ID: step_id,
            ATTEMPT: a.number,
            TOOL: rec.tool,
        }
        if a.worker:
            attributes[WORKER] = a.worker
        if item is not None:
            attributes[ITEM] = item
        span = tracer.start_span(
            f"step {step_id}" if item is None else f"step {step_id}[{item}]",
            context=parent,
            start_time=_ns(a.started_at),
            attributes=attributes,
        )
        if a.error is not None:
            span.set_attribute("exception.type", a.error.type)
            span.set_attribute("exception.message", a.error.message)
            span.set_status(Status(StatusCode.ERROR, f"{a.error.type}: {a.error.message}"))
        span.end(end_time=_ns(a.finished_at) or _ns(a.started_at))


class TracedHandle(RunHandle):
    """A run's handle that ends the run's span when it sees the run finish."""

    def __init__(self, inner: RunHandle, run: RunSpan) -> None:
        self.inner = inner
        self.run = run
        self.run_id = inner.run_id

    def status(self) -> RunStatus:
        return self.inner.status()

    def result(self) -> ExecutionResult:
        return self.inner.result()

    def cancel(self) -> None:
        self.inner.cancel()

    def wait(self, timeout: float | None = None) -> ExecutionResult:
        result = self.inner.wait(timeout)
        self.run.finish(result)
        return result

    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        for event in self.inner.events(timeout):
            yield event
            if event.step_id is None:
                self.run.finish(self.inner.result())

    def __getattr__(self, name: str) -> Any:  # anything else the backend's handle has
        if name == "inner":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def traced(handle: RunHandle, run: RunSpan | None) -> RunHandle:
    """`handle`, ending `run`'s span when it sees the run finish (as is, without a span)."""
    return handle if run is None else TracedHandle(handle, run)


__all__ = [
    "AVAILABLE",
    "RunSpan",
    "TracedHandle",
    "active",
    "attach",
    "attempt_span",
    "current_context",
    "detach",
    "extract",
    "finish_on",
    "inject",
    "record_attempts",
    "record_error",
    "set_worker",
    "start_run",
    "traced",
]
