"""Logs and traces: run and step ids on every log record about a step, OpenTelemetry spans
per run and per attempt, and trace context carried through step messages so a worker's
spans join the submitter's trace.

Spans go to an in-memory exporter of a provider private to these tests (the tracer that
`executor.observability.tracing` uses is patched), so nothing here touches the global provider. The
distributed tests run a Dramatiq worker in this process on fakeredis.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from executor import Flow, FlowExecutor, RetryPolicy, Step, ToolRegistry
from executor.observability import logs, tracing
from executor.observability.logs import ContextFilter, JsonFormatter, TextFormatter, step_context

registry = ToolRegistry()
tool_log = logging.getLogger("tests.observability.tool")


@registry.tool
async def say(text: str) -> str:
    tool_log.warning("async tool says %s", text)
    return text


@registry.tool
def say_sync(text: str) -> str:
    tool_log.warning("sync tool says %s", text)
    return text.upper()


@registry.tool(retry=RetryPolicy(max_attempts=2))
def always_fails(text: str) -> str:
    raise RuntimeError(f"no luck with {text}")


CHAIN = Flow(
    name="chain",
    steps=[
        Step(id="first", tool="say", inputs={"text": "$input.text"}),
        Step(id="second", tool="say_sync", inputs={"text": "$steps.first"}),
    ],
    output="$steps.second",
)
FAILING = Flow(
    name="failing",
    steps=[Step(id="doomed", tool="always_fails", inputs={"text": "$input.text"})],
)


# Fixtures ------------------------------------------------------------------------------
@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer("dagrelay"))
    return exporter


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the tool logger and dagrelay's, through a ContextFilter."""
    found: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record)

    handler = Keep()
    handler.addFilter(ContextFilter())
    loggers = [tool_log, logging.getLogger("dagrelay")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield found
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


@pytest.fixture(scope="module")
def fake_cluster() -> Iterator[dict[str, Any]]:
    """A Dramatiq worker in this process on fakeredis, serving `registry`."""
    dramatiq = pytest.importorskip("dramatiq")
    fakeredis = pytest.importorskip("fakeredis")
    from tests.support.fakes import fake_worker

    server, broker, _runtime = fake_worker(registry)
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        yield {"server": server, "broker": broker, "fakeredis": fakeredis}
    finally:
        worker.stop()


def distributed(cluster: dict[str, Any]) -> FlowExecutor:
    client = cluster["fakeredis"].FakeRedis(server=cluster["server"], decode_responses=True)
    return FlowExecutor(registry=registry, redis_client=client, broker=cluster["broker"])


def by_name(found: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in found}


def wait_for_spans(exporter: InMemorySpanExporter, names: set[str]) -> dict[str, ReadableSpan]:
    """Worker spans end on worker threads, a moment after the client sees the run end."""
    deadline = time.monotonic() + 5
    while True:
        got = by_name(exporter.get_finished_spans())
        if names <= set(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


# Logging -------------------------------------------------------------------------------
def test_records_carry_the_step_they_are_about() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(TextFormatter("%(levelname)s %(message)s%(dagrelay)s"))
    lg = logging.getLogger("tests.observability.plain")
    lg.addHandler(handler)
    lg.propagate = False
    try:
        lg.warning("outside")
        with step_context("r1", "fetch", 2):
            lg.warning("inside")
            with step_context("r1", "inner"):
                lg.warning("nested")
            lg.warning("back")
        lg.warning("own ids", extra={"run_id": "r9", "step_id": "s9"})
    finally:
        lg.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "WARNING outside",
        "WARNING inside [run r1 step fetch #2]",
        "WARNING nested [run r1 step inner]",
        "WARNING back [run r1 step fetch #2]",
        "WARNING own ids [run r9 step s9]",
    ]


def test_json_format_has_the_ids_and_the_exception() -> None:
    formatter = JsonFormatter()
    lg = logging.getLogger("tests.observability.json")
    try:
        raise ValueError("bad <thing>")
    except ValueError:
        with step_context("run-7", "parse", 1):
            record = lg.makeRecord(
                lg.name, logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info=True
            )
            import sys

            record.exc_info = sys.exc_info()
            line = formatter.format(record)
    data = json.loads(line)
    assert data["message"] == "failed x" and data["level"] == "ERROR"
    assert (data["run_id"], data["step_id"], data["attempt"]) == ("run-7", "parse", 1)
    assert "ValueError: bad <thing>" in data["exc_info"]
    assert "\n" not in line  # one record, one line


def test_configure_reads_the_format_and_level_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    try:
        root.handlers = [logging.StreamHandler(stream)]
        monkeypatch.setenv("DAGRELAY_LOG_FORMAT", "json")
        monkeypatch.setenv("DAGRELAY_LOG_LEVEL", "info")
        logs.configure()
        assert root.level == logging.INFO
        with step_context("r", "s"):
            logging.getLogger("tests.observability.cfg").info("hello")
        logs.configure()  # twice: still one filter per handler
        assert sum(isinstance(f, ContextFilter) for f in root.handlers[0].filters) == 1
        monkeypatch.setenv("DAGRELAY_LOG_LEVEL", "loud")
        logs.configure(default_level=logging.ERROR)
        assert root.level == logging.ERROR
    finally:
        root.handlers, root.level = saved
    first = json.loads(stream.getvalue().splitlines()[0])
    assert (first["message"], first["run_id"], first["step_id"]) == ("hello", "r", "s")
    assert "is not a log level" in stream.getvalue()


def test_a_worker_process_logs_with_dagrelays_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.tracing import ObservabilityMiddleware

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    handler = logging.StreamHandler(io.StringIO())
    try:
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        # Dramatiq's CLI emits process_boot once it has set up the process's logging.
        ObservabilityMiddleware().after_process_boot(None)  # type: ignore[arg-type]
        assert isinstance(handler.formatter, TextFormatter)
        assert any(isinstance(f, ContextFilter) for f in handler.filters)
        assert root.level == logging.INFO  # the worker's -v level is left alone
        monkeypatch.setenv("DAGRELAY_LOG_FORMAT", "json")
        ObservabilityMiddleware().after_process_boot(None)  # type: ignore[arg-type]
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        root.handlers, root.level = saved


def test_embedded_tools_log_with_their_run_and_step(records: list[logging.LogRecord]) -> None:
    with FlowExecutor(registry=registry) as ex:
        result = ex.run(CHAIN, {"text": "hi"})
    assert result.succeeded
    said = {r.getMessage(): r for r in records if r.name == tool_log.name}
    async_rec, sync_rec = said["async tool says hi"], said["sync tool says hi"]
    assert (async_rec.run_id, async_rec.step_id) == (result.run_id, "first")  # type: ignore[attr-defined]
    # A sync tool runs in a thread: the ids travel with it.
    assert (sync_rec.run_id, sync_rec.step_id) == (result.run_id, "second")  # type: ignore[attr-defined]


def test_worker_records_carry_run_step_and_attempt(
    fake_cluster: dict[str, Any], records: list[logging.LogRecord]
) -> None:
    with distributed(fake_cluster) as ex:
        result = ex.run(CHAIN, {"text": "yo"}, timeout=20)
    assert result.succeeded, result.error
    said = {r.getMessage(): r for r in records if r.name == tool_log.name}
    for message, step in (("async tool says yo", "first"), ("sync tool says yo", "second")):
        rec = said[message]
        assert (rec.run_id, rec.step_id, rec.attempt) == (result.run_id, step, 1)  # type: ignore[attr-defined]


# Tracing: embedded ------------------------------------------------------------------------
def test_embedded_run_has_a_run_span_and_a_span_per_attempt(spans: InMemorySpanExporter) -> None:
    with FlowExecutor(registry=registry) as ex:
        result = ex.run(CHAIN, {"text": "hi"})
        failed = ex.run(FAILING, {"text": "x"})
    found = spans.get_finished_spans()
    runs = [s for s in found if s.name.startswith("run ")]
    assert {s.name for s in runs} == {"run chain", "run failing"}
    run = next(s for s in runs if s.attributes["dagrelay.run_id"] == result.run_id)
    assert run.attributes["dagrelay.status"] == "succeeded"
    assert run.attributes["dagrelay.backend"] == "local"
    assert tuple(run.attributes["dagrelay.critical_path"]) == ("first", "second")
    steps = [s for s in found if s.parent is not None and s.parent.span_id == run.context.span_id]
    assert sorted(s.attributes["dagrelay.step_id"] for s in steps) == ["first", "second"]
    for s in steps:
        assert s.attributes["dagrelay.run_id"] == result.run_id
        assert s.attributes["dagrelay.attempt"] == 1
        assert s.context.trace_id == run.context.trace_id
        rec = result.steps[s.attributes["dagrelay.step_id"]]
        assert s.start_time == int(rec.attempts[0].started_at.timestamp() * 1e9)
    # A failed run: both attempts, each an error, and the run span an error too.
    frun = next(s for s in runs if s.attributes["dagrelay.run_id"] == failed.run_id)
    assert frun.status.status_code is StatusCode.ERROR
    attempts = [s for s in found if s.parent and s.parent.span_id == frun.context.span_id]
    assert sorted(s.attributes["dagrelay.attempt"] for s in attempts) == [1, 2]
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert attempts[0].attributes["exception.type"] == "RuntimeError"


def test_arun_is_traced_too(spans: InMemorySpanExporter) -> None:
    with FlowExecutor(registry=registry) as ex:
        result = asyncio.run(ex.arun(CHAIN, {"text": "hi"}))
    names = {s.name for s in spans.get_finished_spans()}
    assert {"run chain", "step first", "step second"} <= names
    assert result.succeeded


def test_a_run_inside_the_callers_span_joins_its_trace(spans: InMemorySpanExporter) -> None:
    tracer = tracing._tracer()
    with tracer.start_as_current_span("request") as outer, FlowExecutor(registry=registry) as ex:
        ex.run(CHAIN, {"text": "hi"})
    run = by_name(spans.get_finished_spans())["run chain"]
    assert run.parent is not None and run.parent.span_id == outer.get_span_context().span_id


def test_without_a_provider_nothing_is_traced_or_wrapped() -> None:
    # The global provider is the API's no-op one in this suite: no run span, no wrapper.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with FlowExecutor(registry=registry) as ex:
        handle = ex.submit(CHAIN, {"text": "hi"})
        assert not isinstance(handle, tracing.TracedHandle)
        assert handle.wait(10).succeeded
    assert tracing.current_context() == {}


def test_without_opentelemetry_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "AVAILABLE", False)
    from executor.model.flow import Flow as F

    assert tracing.start_run("r", F(name="f", steps=[]), "local") is None
    assert tracing.current_context() == {}
    assert tracing.attach({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    with tracing.attempt_span("r", "s", 1) as span:
        assert span is None
    with FlowExecutor(registry=registry) as ex:
        assert ex.run(CHAIN, {"text": "hi"}).succeeded


def test_trace_context_round_trips_through_message_options(spans: InMemorySpanExporter) -> None:
    tracer = tracing._tracer()
    with tracer.start_as_current_span("sender") as sender:
        options = tracing.inject({"time_limit": 1})
    assert options["traceparent"].startswith("00-")
    token = tracing.attach(options)
    try:
        with tracing.attempt_span("r", "s", 3, worker="w", tool="t") as span:
            assert span.get_span_context().trace_id == sender.get_span_context().trace_id
    finally:
        tracing.detach(token)
    got = by_name(spans.get_finished_spans())["step s"]
    assert got.parent is not None and got.parent.span_id == sender.get_span_context().span_id
    assert got.attributes["dagrelay.worker"] == "w" and got.attributes["dagrelay.tool"] == "t"
    assert tracing.extract({}) is None and tracing.extract({"traceparent": ""}) is None


# Tracing: distributed ---------------------------------------------------------------------
def test_worker_spans_join_the_submitters_trace(
    fake_cluster: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    with distributed(fake_cluster) as ex:
        handle = ex.submit(CHAIN, {"text": "yo"})
        assert isinstance(handle, tracing.TracedHandle)
        result = handle.wait(20)
        failed = ex.run(FAILING, {"text": "z"}, timeout=20)
    assert result.succeeded, result.error
    assert failed.status == "failed"
    got = wait_for_spans(spans, {"run chain", "step first", "step second", "step doomed"})
    run = got["run chain"]
    assert run.attributes["dagrelay.backend"] == "redis"
    assert run.attributes["dagrelay.status"] == "succeeded"
    for name in ("step first", "step second"):
        step = got[name]
        # Made by the worker thread, from the traceparent in the message it received.
        assert step.context.trace_id == run.context.trace_id, name
        assert step.attributes["dagrelay.run_id"] == result.run_id
        assert step.attributes["dagrelay.step_id"] == name.split()[1]
        assert step.attributes["dagrelay.attempt"] == 1
        assert step.attributes["dagrelay.worker"] == result.steps[name.split()[1]].worker
    assert got["step first"].parent.span_id == run.context.span_id  # type: ignore[union-attr]
    # A retried, failed step: one span per attempt, each an error; the run span too.
    doomed = [s for s in spans.get_finished_spans() if s.name == "step doomed"]
    deadline = time.monotonic() + 5
    while len(doomed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
        doomed = [s for s in spans.get_finished_spans() if s.name == "step doomed"]
    assert sorted(s.attributes["dagrelay.attempt"] for s in doomed) == [1, 2]
    assert all(s.status.status_code is StatusCode.ERROR for s in doomed)
    frun = got.get("run failing")
    assert frun is not None and frun.status.status_code is StatusCode.ERROR
    assert {s.context.trace_id for s in doomed} == {frun.context.trace_id}


def test_steps_recorded_together_each_coordinate_in_their_own_span(
    fake_cluster: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    """A bundle's steps that end together are recorded in one round trip, yet each one's
    dependent starts under that step's own span, not the first recorder's."""
    n = 64  # ready at once: sent as bundles of two, whose steps end in the same turn
    steps = [Step(id="root", tool="say", inputs={"text": "$input.text"})]
    for i in range(n):
        steps.append(Step(id=f"l{i}", tool="say", inputs={"text": "$steps.root"}))
        steps.append(Step(id=f"d{i}", tool="say", inputs={"text": f"$steps.l{i}"}))
    with distributed(fake_cluster) as ex:
        result = ex.run(Flow(name="pairs", steps=steps), {"text": "x"}, timeout=30)
    assert result.succeeded, result.error
    names = {f"step {p}{i}" for p in "ld" for i in range(n)}
    got = wait_for_spans(spans, names)
    assert names <= set(got)
    shared = {got[f"step l{i}"].context.span_id for i in range(n)}
    assert len(shared) == n
    for i in range(n):
        parent = got[f"step d{i}"].parent
        assert parent is not None
        assert parent.span_id == got[f"step l{i}"].context.span_id, i


def test_map_items_on_a_worker_are_spans_of_their_step(
    fake_cluster: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    """Like the embedded backend's, a worker's map items are spans (`step id[i]`), here
    children of their step's attempt span, timed by their records."""
    flow = Flow(
        name="mapped",
        steps=[Step(id="m", tool="say", map="$input.words", inputs={"text": "$item"})],
        output="$steps.m",
    )
    with distributed(fake_cluster) as ex:
        result = ex.run(flow, {"words": ["a", "b", "c"]}, timeout=20)
    assert result.succeeded and result.output == ["a", "b", "c"], result.error
    names = {"step m", "step m[0]", "step m[1]", "step m[2]"}
    got = wait_for_spans(spans, names)
    assert names <= set(got)
    step = got["step m"]
    for i, item in enumerate(result.steps["m"].items or []):
        span = got[f"step m[{i}]"]
        assert span.parent is not None and span.parent.span_id == step.context.span_id
        assert span.attributes["dagrelay.item"] == i
        assert span.start_time == int(item.attempts[0].started_at.timestamp() * 1e9)
