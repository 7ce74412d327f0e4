"""`FlowExecutor`: validate a flow and its input, run it, hand back results."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json, to_jsonable_python

from executor.backends.embedded.backend import LocalBackend, LocalRunHandle
from executor.errors import FlowValidationError, RunNotFoundError
from executor.handle import RunHandle
from executor.model.dag import Dag
from executor.model.flow import Flow, load_flow
from executor.model.input_size import check_input_size
from executor.model.input_size import max_input_bytes as _max_input_bytes
from executor.model.references import iter_refs, parse_ref, walk
from executor.model.schema import input_problems, with_defaults
from executor.model.tools import ToolRegistry, default_registry
from executor.model.validation import validate_flow
from executor.observability import tracing
from executor.result import ExecutionResult
from executor.run.rerun import plan_rerun

if TYPE_CHECKING:
    from executor.backends.redis.backend import RedisBackend

# Deeper input would not survive a round trip of its ExecutionResult through JSON.
MAX_INPUT_DEPTH = 64
RUN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class FlowExecutor:
    """Runs flows in-process (default) or, with `redis_url`, on Dramatiq workers.

    Args:
        redis_url: distributed mode; None runs everything in this process.
        registry: the tools flows may call (default: `default_registry`).
        max_concurrency: at most this many tool calls at once in this executor.
        max_threads: threads for sync tools (embedded mode).
        max_output_bytes: embedded mode: a step whose output's JSON is larger fails
            (None: no limit). Workers apply `DAGRELAY_MAX_OUTPUT_BYTES` (default 1 MiB).
        max_input_bytes: a run's input whose JSON is larger is refused before anything
            is stored or run (default `DAGRELAY_MAX_INPUT_BYTES`, else 4 MiB; 0: none).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        registry: ToolRegistry | None = None,
        max_concurrency: int | None = None,
        max_threads: int = 32,
        namespace: str = "dagrelay",
        result_ttl: int = 7 * 24 * 3600,
        redis_client: Any = None,
        broker: Any = None,
        max_output_bytes: int | None = None,
        max_input_bytes: int | None = None,
    ) -> None:
        self.max_input_bytes = _max_input_bytes(max_input_bytes)
        self.registry = registry if registry is not None else default_registry
        self.redis_url = redis_url
        self._redis: RedisBackend | None = None
        if redis_url is not None or redis_client is not None:
            # Imported here: the embedded mode must not need a Redis client library.
            from executor.backends.redis.backend import RedisBackend

            self._redis = RedisBackend(
                redis_url or "redis://",
                self.registry,
                namespace,
                result_ttl,
                client=redis_client,
                broker=broker,
            )
        self._backend = LocalBackend(
            self.registry,
            max_concurrency=max_concurrency,
            max_threads=max_threads,
            worker=f"{socket.gethostname()}:{os.getpid()}",
        )
        self._backend.max_output_bytes = max_output_bytes

    # Preparing a run -----------------------------------------------------------------
    def prepare(
        self, flow: Flow | str | Path, inputs: Mapping[str, Any] | None = None
    ) -> tuple[Dag, Any]:
        """Validate a flow (or flow file) and an input against this executor's tools.

        Returns:
            the flow's graph and the input as JSON data.
        Raises:
            FlowValidationError: every problem with the flow, or with the input.
        """
        if not isinstance(flow, Flow):
            flow = load_flow(flow)
        if self._redis is None:
            dag = validate_flow(flow, self.registry)
        else:
            dag = _validate_distributed(flow, self.registry)
        data = check_inputs(dag, inputs)
        check_input_size(data, self.max_input_bytes)
        return dag, data

    # Running -----------------------------------------------------------------------
    def submit(
        self,
        flow: Flow | str | Path,
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> RunHandle:
        """Start a run and return at once with its handle.

        Raises:
            FlowValidationError: the flow or input is invalid; nothing was started.
        """
        dag, data = self.prepare(flow, inputs)
        rid = new_run_id(run_id)
        # The run's span (OpenTelemetry, when configured; else None and no cost).
        span = tracing.start_run(rid, dag.flow, "local" if self._redis is None else "redis")
        if self._redis is not None:
            try:
                with tracing.active(span):  # the roots' messages carry its context
                    handle = self._redis.submit(dag, data, rid)
            except BaseException as exc:
                if span is not None:
                    span.finish(None, exc)
                raise
            return tracing.traced(handle, span)
        run = self._backend.new_run(dag, data, rid)
        loop = self._backend.background_loop()
        future = asyncio.run_coroutine_threadsafe(run.execute(), loop)
        tracing.finish_on(future, span)  # ends it even if nobody waits
        return tracing.traced(LocalRunHandle(run, future), span)

    def run(
        self,
        flow: Flow | str | Path,
        inputs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> ExecutionResult:
        """Run a flow to the end and return its result (a failed step does not raise).

        Safe to call from inside a running event loop: the run uses its own loop thread.

        Raises:
            FlowValidationError: the flow or input is invalid.
            TimeoutError: `timeout` seconds passed; the run is cancelled.
        """
        handle = self.submit(flow, inputs)
        try:
            return handle.wait(timeout)
        except TimeoutError:
            handle.cancel()
            raise

    async def arun(
        self, flow: Flow | str | Path, inputs: Mapping[str, Any] | None = None
    ) -> ExecutionResult:
        """Run a flow on the current event loop and return its result."""
        if self._redis is not None:
            return await asyncio.to_thread(self.run, flow, inputs)
        dag, data = self.prepare(flow, inputs)
        run = self._backend.new_run(dag, data, new_run_id(None))
        span = tracing.start_run(run.run_id, dag.flow, "local")
        if span is None:
            return await run.execute()
        try:
            result = await run.execute()
        except BaseException as exc:
            span.finish(None, exc)
            raise
        span.finish(result)
        return result

    def submit_rerun(
        self,
        previous: str | ExecutionResult,
        flow: Flow | str | Path | None = None,
        *,
        from_steps: Iterable[str] = (),
    ) -> RunHandle:
        """Run a finished run again, in place: what did not succeed (and `from_steps`
        with what depends on them) runs again, successes are reused; returns at once.

        Args:
            previous: the run's id, or its `ExecutionResult` (embedded: one saved as
                JSON works too, with `flow`).
            flow: the run's flow, where the executor does not hold it (an embedded
                result); distributed runs keep theirs in Redis.
            from_steps: steps to run again even if they succeeded, and their dependents.
        Raises:
            RunNotFoundError: no such run.
            DagrelayError: the run is not finished, or nothing would run again.
        """
        run_id = previous.run_id if isinstance(previous, ExecutionResult) else previous
        steps = list(from_steps)
        if flow is not None and not isinstance(flow, Flow):
            flow = load_flow(flow)
        if self._redis is not None:
            return self._redis.rerun(new_run_id(run_id), flow, steps)
        if isinstance(previous, ExecutionResult):
            result = previous
            if flow is None:
                try:
                    flow = self._backend.get(run_id).flow  # type: ignore[assignment]
                except RunNotFoundError:
                    raise FlowValidationError(
                        f"rerun of run {run_id}: give its flow (rerun(result, flow=...))"
                    ) from None
        else:
            held = self._backend.get(run_id)
            result, flow = held.snapshot(), flow or held.flow  # type: ignore[assignment]
        assert isinstance(flow, Flow)
        if flow.name != result.flow_name:
            raise FlowValidationError(
                f"run {run_id} is of flow {result.flow_name!r}, not {flow.name!r}"
            )
        dag = validate_flow(flow, self.registry)
        statuses = {sid: rec.status for sid, rec in result.steps.items()}
        keep, again = plan_rerun(run_id, dag, result.status, statuses, steps)
        run = self._backend.new_run(dag, result.inputs, run_id)
        run.seed(result, keep, again)
        loop = self._backend.background_loop()
        future = asyncio.run_coroutine_threadsafe(run.execute(), loop)
        return LocalRunHandle(run, future)

    def rerun(
        self,
        previous: str | ExecutionResult,
        flow: Flow | str | Path | None = None,
        *,
        from_steps: Iterable[str] = (),
        timeout: float | None = None,
    ) -> ExecutionResult:
        """`submit_rerun` and wait for its result (the same run id, both passes' attempts)."""
        return self.submit_rerun(previous, flow, from_steps=from_steps).wait(timeout)

    def get_run(self, run_id: str) -> RunHandle:
        """A handle on a run this executor started.

        Raises:
            RunNotFoundError: no such run.
        """
        if self._redis is not None:
            return self._redis.get(new_run_id(run_id))
        return _AttachedHandle(self._backend.get(run_id))

    def list_runs(self, limit: int = 50) -> list[tuple[str, dict[str, str]]]:
        """Recent runs in Redis (id and summary fields), newest first."""
        if self._redis is None:
            return [
                (rid, {"status": r.status(), "flow_name": r.flow.name})
                for rid, r in reversed(self._backend._runs.items())
            ][:limit]
        return self._redis.store.list_runs(limit)

    def close(self) -> None:
        """Release the executor's loop, threads and connections."""
        self._backend.close()
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> FlowExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AttachedHandle(LocalRunHandle):
    """A handle on an existing local run, waiting on its event log."""

    def __init__(self, run: Any) -> None:
        self.run_id = run.run_id
        self._run = run

    def wait(self, timeout: float | None = None) -> ExecutionResult:
        for _ in self._run.log.follow(timeout):
            pass
        return self._run.snapshot()


def _validate_distributed(flow: Flow, registry: ToolRegistry) -> Dag:
    """Like embedded validation when this process has tools; structure only when it has
    none (a client need not import the workers' tools: an unknown tool then fails its
    step with a clear message)."""
    return validate_flow(flow, registry if len(registry) else None)


def new_run_id(run_id: str | None) -> str:
    """A fresh run id, or the caller's after checking it is safe inside a key."""
    if run_id is None:
        return uuid.uuid4().hex
    if not 1 <= len(run_id) <= 128 or not set(run_id) <= RUN_ID_CHARS:
        raise FlowValidationError(f"run id {run_id!r} must be 1-128 letters, digits, '-' or '_'")
    return run_id


def _depth(data: Any) -> int:
    """How deeply lists and dicts nest in JSON data (a scalar is 0)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, level = todo.pop()
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in items if isinstance(v, dict | list))
    return deepest


def check_inputs(dag: Dag, inputs: Mapping[str, Any] | None) -> Any:
    """Check the input is JSON data that fits the flow's `input` schema (defaults filled
    in) and holds every `$input` path the flow reads.

    Raises:
        FlowValidationError: naming each field that does not fit, each missing input
            and the step that needs it.
    """
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise FlowValidationError(f"input must be a mapping, got {type(inputs).__name__}")
    try:
        data = to_jsonable_python(inputs)
        to_json(data)  # what cannot be JSON text (a lone surrogate) fails here, not later
    except Exception as exc:
        raise FlowValidationError(f"input is not JSON-compatible: {exc}") from None
    if _depth(data) > MAX_INPUT_DEPTH:
        raise FlowValidationError(f"input is nested deeper than {MAX_INPUT_DEPTH} levels")
    schema = dag.flow.input
    if schema is not None:
        data = with_defaults(schema, data)
        wrong = input_problems(schema, data)
        if wrong:
            raise FlowValidationError(wrong)
    problems: list[str] = []
    for sid, step in dag.steps.items():
        texts = list(iter_refs(step.inputs))
        if step.map is not None:
            texts.append(step.map)
        for text in texts:
            ref = parse_ref(text)
            if ref.root != "input":
                continue
            try:
                walk(data, ref.path, text)
            except Exception as exc:
                problems.append(f"input: step {sid!r} needs {exc}")
    if problems:
        raise FlowValidationError(sorted(set(problems)))
    return data
